"""The package's import contracts (pyproject.toml, [tool.importlinter]): its layers, no cycles between
the subpackages of any package, stages that never import each other, Ray only in the Ray layer, and a GPU core that needs no Ray, DeepSpeed,
faiss or vLLM. Function-local imports count, so an import moved into a function still breaks them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--no-cache"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 kept, 0 broken" in done.stdout

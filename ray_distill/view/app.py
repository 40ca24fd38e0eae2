"""The viewer's web app: aiohttp routes rendering Jinja2 templates, read-only over one run directory.

Every handler reads what it shows from disk when asked (through the light
index's cache for record lists), so the pages follow a run that is still
writing. Reads run in a worker thread, so a slow one does not stall other
requests. Nothing here opens a file of the run for writing.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from ray_distill.view import markdown, run, training
from ray_distill.view.query import Filters, LightIndex, find_records, page
from ray_distill.view.trajectory import pygments_css, record_view

RUN_DIR = web.AppKey("run_dir", Path)
INDEX = web.AppKey("index", LightIndex)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
ACTIVE_SECONDS = 120  # a store or log that changed this recently means a stage is probably running
_COUNTS = ("records", "trajectories", "questions", "passages", "examples", "sequences", "tokens", "trained_tokens",
           "kept", "steps", "trials", "shards")
_REPORT_FILES = {".png": "image/png", ".md": "text/markdown", ".json": "application/json"}


def url(path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("ray_distill.view", "templates"),
                             autoescape=jinja2.select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    env.globals["url"] = url
    return env


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    html = request.app[TEMPLATES].get_template(template).render(run_dir=request.app[RUN_DIR], **context)
    return web.Response(text=html, content_type="text/html", status=status)


def _not_found(request: web.Request, what: str) -> web.Response:
    return _render(request, "error.html", status=404, message=what)


def _scalars(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A stage summary's numbers and short texts, by dotted key."""
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _scalars(v, f"{prefix}{k}.")]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return [(prefix.rstrip("."), value)]
    return [(prefix.rstrip("."), f"{len(value)} entries")]


def _stage_rows(run_dir: Path) -> list[dict]:
    rows = []
    for stage in run.stage_states(run_dir):
        facts = _scalars(stage.get("summary") or {})
        seconds = stage.get("seconds") or 0
        rates = [(k, v / seconds) for k, v in facts if seconds and isinstance(v, int) and not isinstance(v, bool)
                 and v > 0 and k.rsplit(".", 1)[-1] in _COUNTS]
        rows.append({**stage, "facts": facts, "rates": rates})
    return rows


def _overview(run_dir: Path, index: LightIndex) -> dict[str, Any]:
    report = run_dir / "report"
    stores = [{"store": s, "records": index.table(s.files())[0].num_rows, "settings": s.settings(),
               "results": s.results()} for s in run.stores(run_dir)]
    return {
        "stages": _stage_rows(run_dir), "stores": stores, "trainings": run.training_runs(run_dir),
        "report_html": markdown.to_html((report / "report.md").read_text()) if (report / "report.md").is_file() else None,
        "plot": (report / "accuracy.png").is_file(), "sweep": (run_dir / "sweep" / "trials.json").is_file(),
        "active": run.recently_changed(run_dir, ACTIVE_SECONDS, time.time()),
    }


async def overview(request: web.Request) -> web.Response:
    return _render(request, "overview.html",
                   **await asyncio.to_thread(_overview, request.app[RUN_DIR], request.app[INDEX]))


async def report_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = request.app[RUN_DIR] / "report" / name
    if "/" in name or name.startswith(".") or path.suffix not in _REPORT_FILES or not path.is_file():
        return _not_found(request, f"no report file {name}")
    return web.FileResponse(path, headers={"Content-Type": _REPORT_FILES[path.suffix]})


def _store(request: web.Request) -> Optional[run.Store]:
    return run.find_store(request.app[RUN_DIR], request.query.get("store", ""))


def _int(request: web.Request, name: str, default: int) -> int:
    """A page or sample number from the query, within what a Parquet int32 column holds."""
    try:
        return max(-2**31, min(int(request.query.get(name, default)), 2**31 - 1))
    except ValueError:
        return default


async def trajectories(request: web.Request) -> web.Response:
    store = _store(request)
    if store is None:
        return _not_found(request, f"no record store {request.query.get('store', '')!r} in this run")
    filters = Filters.from_query(request.query)
    found = await asyncio.to_thread(page, request.app[INDEX], store.files(), filters, _int(request, "page", 1))
    return _render(request, "trajectories.html", store=store, filters=filters, page=found,
                   results=store.results(), query=filters.as_query())


async def trajectory(request: web.Request) -> web.Response:
    store = _store(request)
    q = request.query
    if store is None or not q.get("dataset") or not q.get("example_id"):
        return _not_found(request, "a trajectory needs store, dataset and example_id")
    records = await asyncio.to_thread(find_records, request.app[INDEX], store.files(), q["dataset"], q["example_id"],
                                      _int(request, "sample", 0))
    if not records:
        return _not_found(request, f"no record {q['dataset']}/{q['example_id']}/{q.get('sample', 0)} in {store.id}")
    return _render(request, "trajectory.html", store=store, record=record_view(records[0]))


def _compare(run_dir: Path, index: LightIndex, dataset: str, example_id: str) -> list[dict]:
    stores = run.stores(run_dir)
    # The filter's table holds the teacher's trajectories with their verdict; the generate store only
    # when there is no filter table with this question yet.
    teacher = [s for s in stores if s.kind == "filter" and s.id.endswith("trajectories.parquet")]
    teacher += [s for s in stores if s.kind == "generate"]
    columns, seen_teacher = [], set()
    for store in teacher + [s for s in stores if s.kind == "evaluate"]:
        records = find_records(index, store.files(), dataset, example_id)
        ftp = store.id.split("/")[1] if store.teacher else None
        if not records or (store.teacher and ftp in seen_teacher):
            continue
        if store.teacher:
            seen_teacher.add(ftp)
        results = store.results() or {}
        columns.append({"store": store, "role": "teacher" if store.teacher else "student",
                        "settings": store.settings(), "record": record_view(records[0]), "samples": len(records),
                        "set_results": (results.get("sets") or {}).get(dataset)})
    return columns


async def compare(request: web.Request) -> web.Response:
    dataset, example_id = request.query.get("dataset", ""), request.query.get("example_id", "")
    if not dataset or not example_id:
        return _not_found(request, "compare needs dataset and example_id")
    columns = await asyncio.to_thread(_compare, request.app[RUN_DIR], request.app[INDEX], dataset, example_id)
    return _render(request, "compare.html", dataset=dataset, example_id=example_id, columns=columns)


def _training(run_dir: Path, train: run.TrainRun, number: int) -> dict[str, Any]:
    settings = train.settings()
    row = training.sequence(train.path, number)
    examples, tokenizer_path = [], None
    if row is not None:
        tokenizer_path = training.tokenizer_dir(train.path, settings)
        examples = training.packed_examples(row, training.decoder(tokenizer_path))
    source = train.source_store(run_dir)
    return {"train": train, "settings": settings, "sequences": training.sequence_list(train.path), "number": number,
            "row": row, "examples": examples, "tokenizer": tokenizer_path, "source": source,
            "loss": training.loss_svg(training.steps(train.path)),
            "sft_summary": training.read_json_text(train.path / "sft" / "summary.json"),
            "compute": training.read_json_text(train.path / "logs" / "compute.json")}


async def training_page(request: web.Request) -> web.Response:
    run_dir = request.app[RUN_DIR]
    train = run.find_training_run(run_dir, request.query.get("run", ""))
    if train is None:
        return _not_found(request, f"no training run {request.query.get('run', '')!r} in this run")
    context = await asyncio.to_thread(_training, run_dir, train, _int(request, "seq", 0))
    return _render(request, "training.html", **context)


async def sweep(request: web.Request) -> web.Response:
    trials = await asyncio.to_thread(run.sweep_trials, request.app[RUN_DIR])
    if trials is None:
        return _not_found(request, "this run has no sweep (sweep/trials.json)")
    sets = list(dict.fromkeys(k.split("/", 1)[1] for t in trials for k in t.get("metrics", {})
                              if k.startswith("accuracy/")))
    return _render(request, "sweep.html", trials=trials, sets=sets)


async def pygments_stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=pygments_css(), content_type="text/css")


def index_stores(run_dir: Path, index: LightIndex) -> tuple[int, int]:
    """Read the light columns of every store into `index`: (stores, records). A store of 100,000 records
    in the store's own parts (64 records each) takes seconds to index, from Parquet footers mostly, so
    the viewer does it before it answers, and a request then reads only parts written since."""
    stores = run.stores(run_dir)
    return len(stores), sum(index.table(store.files())[0].num_rows for store in stores)


async def _index_on_startup(app: web.Application) -> None:
    start = time.perf_counter()
    stores, records = await asyncio.to_thread(index_stores, app[RUN_DIR], app[INDEX])
    print(f"indexed {records:,} records in {stores} stores in {time.perf_counter() - start:.1f} s", flush=True)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@web.middleware
async def _loopback_names_only(request: web.Request, handler) -> web.StreamResponse:
    """A viewer on loopback answers only requests that name a loopback host: a web page elsewhere could
    otherwise point a name of its own at 127.0.0.1 (DNS rebinding) and read the run through the browser."""
    if (request.url.host or "").strip("[]") not in LOOPBACK:
        return web.Response(status=421, text="this viewer answers requests addressed to its loopback address only")
    return await handler(request)


def make_app(run_dir: Path, loopback: bool = True) -> web.Application:
    """The viewer over `run_dir`; `loopback`: it listens on a loopback address (and answers only requests
    addressed to one)."""
    app = web.Application(middlewares=[_loopback_names_only] if loopback else [])
    app[RUN_DIR] = Path(run_dir)
    app[INDEX] = LightIndex()
    app[TEMPLATES] = _environment()
    app.on_startup.append(_index_on_startup)
    app.router.add_get("/", overview)
    app.router.add_get("/report/{name}", report_file)
    app.router.add_get("/trajectories", trajectories)
    app.router.add_get("/trajectory", trajectory)
    app.router.add_get("/compare", compare)
    app.router.add_get("/training", training_page)
    app.router.add_get("/sweep", sweep)
    app.router.add_get("/pygments.css", pygments_stylesheet)
    app.router.add_static("/static", Path(__file__).parent / "static")
    return app


def serve(run_dir: Path, host: str, port: int) -> None:
    """Serve the viewer until interrupted, after printing its address."""
    # The viewer shows what this machine has: a student's tokenizer is read from the HF cache, never fetched.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app = make_app(run.check_run_dir(Path(run_dir)), loopback=host in LOOPBACK)
    shown = f"[{host}]" if ":" in host else host
    print(f"viewing {run_dir}: indexing its record stores", flush=True)
    # run_app prints once the stores are indexed and the server listens
    web.run_app(app, host=host, port=port, print=lambda _: print(f"open http://{shown}:{port}/", flush=True))

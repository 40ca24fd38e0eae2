"""Greedy chat completion with vLLM, printed as JSON (run in a subprocess:
vLLM spawns workers, so it must not start inside the pytest process)."""

import json
import sys

if __name__ == "__main__":
    from vllm import LLM, SamplingParams

    model, prompt, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    llm = LLM(model=model, enforce_eager=True, dtype="float32", max_model_len=2048, seed=0)
    out = llm.chat([{"role": "user", "content": prompt}], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    print("RESULT " + json.dumps(out[0].outputs[0].text))

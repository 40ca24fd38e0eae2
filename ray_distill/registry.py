"""The pipeline's stages by name, in pipeline order, with their one-line help.

Config validation and the command line's `--help` need only this, so they
import no stage (torchtune keeps its recipes in a registry the same way);
`ray_distill.stages.load` imports a stage when it is about to run.
"""

STAGES: dict[str, str] = {
    "world": "generate the fictional corpus (Wikipedia-2018 format) and its fact/math questions",
    "index": "split the corpus into shards, embed them with Ray Data and build their faiss indexes",
    "cot": "the teacher answers the training questions in plain chain of thought (FTP source, CoT baseline)",
    "generate": "the teacher solves the training questions as a CodeAct agent (with FTP prefixes from `cot`)",
    "filter": "score the teacher's records and keep the correct trajectories without parse errors (training data)",
    "train": "fine-tune the student on the kept teacher data (Ray Train + DeepSpeed) and export it",
    "evaluate": "the base and distilled students answer held-out questions (agent with SAG, or CoT); accuracy per set",
    "sweep": "Ray Tune over students x FTP x SAG plus the CoT baselines: each trial trains and evaluates",
    "report": "tabulate every evaluation of the run (Table 2 layout), plot accuracy against student size",
}

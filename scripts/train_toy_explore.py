"""Exploration run: train one toy model with checkpoints and a pass@1 monitor."""
import sys
from pathlib import Path
from dataclasses import replace
from experiments.toy.train import SPECS, train_model

name, steps, every, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
spec = replace(SPECS[name], steps=steps)
train_model(spec, Path(f"/tmp/toytrain/{name}"), threads=threads, eval_every=every, checkpoints=True)

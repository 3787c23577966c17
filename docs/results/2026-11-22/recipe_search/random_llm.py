"""A copy of the embedded LLM folder (config, tokenizer) with freshly initialised weights, for the control "is it the
pre-trained LLM that cannot learn to read the image?" (configs/train/recipe/sem-sem-und-only-full-random-llm.yaml);
with LAYERS, a shallower one (runs/recipe/lm-random-LAYERSl).

    python docs/results/2026-11-22/recipe_search/random_llm.py [LAYERS]
"""

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

layers = int(sys.argv[1]) if len(sys.argv) > 1 else None
source = Path("runs/embedded/lm")
target = Path("runs/recipe/lm-random" + (f"-{layers}l" if layers else ""))
tmp = target.with_name(target.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
shutil.copytree(source, tmp)
torch.manual_seed(0)
config = AutoConfig.from_pretrained(source)
if layers:
    config.num_hidden_layers = layers
model = AutoModelForCausalLM.from_config(config)
(tmp / "model.safetensors").unlink()
model.save_pretrained(tmp)
shutil.rmtree(target, ignore_errors=True)
tmp.replace(target)
print("wrote", target)

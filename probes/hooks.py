"""TransformerLens-style names over a Hugging Face LLM inside a unified model, with plain PyTorch hooks.

Sites:
    blocks.{L}.hook_resid_pre | hook_resid_mid | hook_resid_post | hook_attn_out | hook_mlp_out
    blocks.{L}.hook_z   the heads' outputs side by side, (batch, pos, heads x head_dim), before the output projection
    vision_in.hook_out   gen_in.hook_out   gen_head.hook_in
    blocks.{L}.attn.hook_pattern   (read only, from `run_with_patterns`)
A hook function takes (activation, name) and returns a replacement or None (read only). `run_with_cache` stores
what `names_filter` lets through. LoRA merged or not, the same module paths are hooked.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import torch

from models.sequence import Batch
from models.unified import UnifiedVLM

HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]
BLOCK_SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "hook_z")
ADAPTER_SITES = ("vision_in.hook_out", "gen_in.hook_out", "gen_head.hook_in")


def site_names(n_layers: int) -> list[str]:
    return [*ADAPTER_SITES, *(f"blocks.{layer}.{s}" for layer in range(n_layers) for s in BLOCK_SITES)]


def resid_name(layer: int, where: str = "post") -> str:
    return f"blocks.{layer}.hook_resid_{where}"


class HookedVLM:
    """A view of a UnifiedVLM that can read and edit named activations."""

    def __init__(self, model: UnifiedVLM):
        self.model = model

    @property
    def n_layers(self) -> int:
        return len(self.model.blocks)

    @property
    def names(self) -> list[str]:
        return site_names(self.n_layers)

    def _check(self, name: str) -> None:
        if name not in self.names:
            raise KeyError(f"unknown hook site '{name}'; sites look like {self.names[:4]} ... {self.names[-1]}")

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, HookFn]]) -> Iterator[HookedVLM]:
        """Attach hook functions for the duration of the block."""
        handles = []
        by_name: dict[str, list[HookFn]] = {}
        for name, fn in fwd_hooks:
            self._check(name)
            by_name.setdefault(name, []).append(fn)
        try:
            for name, fns in by_name.items():
                handles += self._attach(name, fns)
            yield self
        finally:
            for h in handles:
                h.remove()

    def _attach(self, name: str, fns: list[HookFn]) -> list:
        def apply(x: torch.Tensor) -> torch.Tensor:
            for fn in fns:
                out = fn(x, name)
                x = x if out is None else out
            return x

        if not name.startswith("blocks."):
            module = {
                "vision_in.hook_out": self.model.vision_in.hook_out,
                "gen_in.hook_out": self.model.gen_in.hook_out,
                "gen_head.hook_in": self.model.gen_head.hook_in,
            }[name]
            return [module.register_forward_hook(lambda _m, _i, out: apply(out))]
        layer_idx, site = re.match(r"blocks\.(\d+)\.(\w+)", name).groups()
        layer = self.model.blocks[int(layer_idx)]
        if site == "hook_resid_pre":
            return [layer.register_forward_pre_hook(lambda _m, args: (apply(args[0]), *args[1:]))]
        if site == "hook_resid_post":
            return [layer.register_forward_hook(lambda _m, _i, out: apply(out))]
        if site == "hook_mlp_out":
            return [layer.mlp.register_forward_hook(lambda _m, _i, out: apply(out))]
        if site == "hook_z":
            return [layer.self_attn.o_proj.register_forward_pre_hook(lambda _m, args: (apply(args[0]), *args[1:]))]
        if site == "hook_attn_out":
            return [layer.self_attn.register_forward_hook(lambda _m, _i, out: (apply(out[0]), *out[1:]))]
        # resid_mid = resid_pre + attn_out: edit it through the attention output
        state: dict[str, torch.Tensor] = {}

        def remember(_m, args):
            state["pre"] = args[0]

        def edit(_m, _i, out):
            mid = state["pre"] + out[0]
            return (apply(mid) - state["pre"], *out[1:])

        return [layer.register_forward_pre_hook(remember), layer.self_attn.register_forward_hook(edit)]

    def run_with_cache(
        self,
        batch: Batch,
        names_filter: Callable[[str], bool] | list[str] | str | None = None,
        detach: bool = True,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward the batch; return the model outputs and the cached activations that pass the filter."""
        return self._cached(lambda: self.model(batch), names_filter, detach)

    def run_with_cache_embeds(
        self, inputs_embeds: torch.Tensor, batch: Batch, names_filter=None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Final hidden states from given input embeddings, plus the cache: for patching and benchmarks."""
        return self._cached(lambda: self.model.hidden(batch, inputs_embeds=inputs_embeds), names_filter, True)

    def _cached(self, forward, names_filter, detach: bool):
        """Run `forward()` with every selected site stored; return (its output, the cache)."""
        cache: dict[str, torch.Tensor] = {}

        def store(x: torch.Tensor, name: str) -> None:
            cache[name] = x.detach() if detach else x

        with self.hooks([(n, store) for n in self._select(names_filter)]):
            out = forward()
        return out, cache

    @torch.no_grad()
    def run_with_patterns(self, batch: Batch, layers: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Attention patterns, {"blocks.{L}.attn.hook_pattern": (batch, heads, query, key)}: each query row is the
        softmax the block's attention applied, padding and future keys at 0. Fused attention kernels never form the
        pattern, so this forward runs the LLM's eager attention (the same function, written out), then restores
        the model's own kernel."""
        layers = list(range(self.n_layers)) if layers is None else layers
        bad = [k for k in layers if not 0 <= k < self.n_layers]
        if bad:
            raise KeyError(f"no block(s) {bad}: this LLM has blocks 0..{self.n_layers - 1}")
        config = self.model.base_llm.config
        kernel = config._attn_implementation
        patterns: dict[str, torch.Tensor] = {}

        def keep(name: str):
            def hook(_m, _i, out):
                if out[1] is None:
                    raise RuntimeError(f"{name}: the attention returned no pattern; is this a Llama/Qwen2 LLM?")
                patterns[name] = out[1].detach()

            return hook

        handles = [
            self.model.blocks[k].self_attn.register_forward_hook(keep(f"blocks.{k}.attn.hook_pattern")) for k in layers
        ]
        try:
            config._attn_implementation = "eager"
            self.model.hidden(batch)
        finally:
            config._attn_implementation = kernel
            for h in handles:
                h.remove()
        return patterns

    def _select(self, names_filter) -> list[str]:
        if names_filter is None:
            return self.names
        if isinstance(names_filter, str):
            names_filter = [names_filter]
        if callable(names_filter):
            return [n for n in self.names if names_filter(n)]
        for n in names_filter:
            self._check(n)
        return list(names_filter)

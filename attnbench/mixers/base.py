"""The one interface every token mixer implements.

A mixer maps x: [B, T, D] -> y: [B, T, D] and can decode:

    state = mixer.init_state(batch, max_len, device, dtype)   # empty cache / zero recurrent state
    y, state = mixer(prompt, state)                            # prefill
    y, state = mixer(next_token_embedding, state)              # one step, [B, 1, D]

With ``state=None`` the forward is the training path and returns ``(y, None)``.
A state is a flat ``dict`` of tensors (plus plain ints such as the cache length), so that
``state_nbytes`` measures exactly what decoding holds, and ``state_bytes(L)`` predicts it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

IMPLS = ("torch", "kernel", "auto")
State = dict[str, Any]


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
    return impl


def choose_impl(impl: str, kernel_ready: tuple[bool, str], mixer: str) -> str:
    """Resolve ``impl`` to 'torch' or 'kernel'. ``kernel_ready`` is (usable, why-not)."""
    usable, why_not = kernel_ready
    if impl == "kernel" and not usable:
        raise RuntimeError(f"{mixer}: impl='kernel' was asked for but {why_not}")
    if impl == "auto":
        return "kernel" if usable else "torch"
    return impl


def state_nbytes(state: State | None) -> int:
    """Bytes of device memory held by a decoding state (tensors only)."""
    if state is None:
        return 0
    return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def require_divisible(name: str, value: int, by_name: str, by: int) -> None:
    if by <= 0 or value % by:
        raise ValueError(f"{name}={value} must be a positive multiple of {by_name}={by}")


class Mixer(nn.Module):
    """Base class: input checks, impl bookkeeping. Subclasses implement the four methods."""

    def __init__(self, d_model: int, impl: str = "auto"):
        super().__init__()
        if d_model <= 0:
            raise ValueError(f"d_model must be positive; got {d_model}")
        self.d_model = d_model
        self.impl = check_impl(impl)
        self.impl_ran: str | None = None  # what the last forward actually ran, e.g. "fla.chunk_kda"

    def check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{type(self).__name__}: x must be [B, T, d_model={self.d_model}]; got shape {tuple(x.shape)}"
            )
        return x.shape[0], x.shape[1]

    def check_call(self, x: torch.Tensor, state: State | None) -> tuple[int, int]:
        """check_input, plus, for mixers whose state has a fixed size, the state against init_state's."""
        batch, t = self.check_input(x)
        if state is not None:
            self.check_state(state, self.init_state(batch, 0, device="meta"))
        return batch, t

    def check_state(self, state: State, expected: State) -> None:
        """Raise if ``state`` does not have the keys and shapes that ``init_state`` would make."""
        for key, ref in expected.items():
            got = state.get(key)
            if isinstance(ref, torch.Tensor):
                if not isinstance(got, torch.Tensor) or got.shape != ref.shape:
                    shape = None if not isinstance(got, torch.Tensor) else tuple(got.shape)
                    raise ValueError(
                        f"{type(self).__name__}: state[{key!r}] must have shape {tuple(ref.shape)}; got {shape}"
                    )

    def cache_len(self, state: State, t: int, max_len: int, cache: str) -> int:
        """state['len'] checked against a preallocated cache of ``max_len`` that must take ``t`` more."""
        name, filled = type(self).__name__, state.get("len")
        if not isinstance(filled, int) or not 0 <= filled <= max_len:
            raise ValueError(f"{name}: state['len'] must be an int in [0, max_len={max_len}]; got {filled!r}")
        if filled + t > max_len:
            raise ValueError(
                f"{name}: {cache} overflow: len={filled} + T={t} exceeds max_len={max_len}; "
                f"call init_state with max_len >= {filled + t}"
            )
        return filled

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        raise NotImplementedError

    def init_state(self, batch: int, max_len: int, device=None, dtype=torch.float32) -> State:
        raise NotImplementedError

    def state_bytes(self, context_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
        raise NotImplementedError

    def flops_per_token(self, context_len: int) -> float:
        """Forward matmul FLOPs per token at this context (projections + mixing); see bench/flops."""
        raise NotImplementedError

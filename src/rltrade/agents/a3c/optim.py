"""``SharedAdam``: Adam whose moments live in shared memory, updated by every A3C worker."""

from __future__ import annotations

from typing import Any

import torch


class SharedAdam(torch.optim.Adam):
    """Adam whose state (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter) is created at
    construction and placed in shared memory, so that every worker process updates the same
    moments. Loading a state dict keeps it shared.
    """

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=False)
        self._fill_state()
        self.share_memory()

    def _fill_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "step" not in state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if "exp_avg_sq" not in state:
                    state["exp_avg_sq"] = torch.zeros_like(p,
                                                           memory_format=torch.preserve_format)

    def share_memory(self) -> SharedAdam:
        """Move every state tensor into shared memory (in place)."""
        for state in self.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.share_memory_()
        return self

    def is_shared(self) -> bool:
        """Whether every state tensor is in shared memory."""
        return all(v.is_shared() for s in self.state.values() for v in s.values()
                   if isinstance(v, torch.Tensor))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._fill_state()
        self.share_memory()

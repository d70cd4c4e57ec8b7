"""When a validation-end callback runs: every n-th real validation (never the sanity check)."""

from __future__ import annotations

import lightning as L


class EveryNValidations(L.Callback):
    """Base of callbacks that act on every ``every_n_validations``-th validation end."""

    def __init__(self, every_n_validations: int = 1) -> None:
        super().__init__()
        if every_n_validations < 1:
            raise ValueError(f"{type(self).__name__}.every_n_validations must be >= 1, "
                             f"got {every_n_validations}")
        self.every_n_validations = every_n_validations
        self._validations = 0

    def due(self, trainer: L.Trainer) -> bool:
        """Count this validation and say whether the callback runs on it."""
        if trainer.sanity_checking:
            return False
        self._validations += 1
        return (self._validations - 1) % self.every_n_validations == 0

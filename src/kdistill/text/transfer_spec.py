"""The `data.transfer_set` section of an experiment: Tang et al.'s perturbed copies of the training
sentences, added to the distilled student's training set only (`kdistill.text.transfer_data`).

A leaf of the schema (pydantic and `AugmentRules` only), so `kdistill.config` can hold it without
importing transformers. The rules' own checks (their sum, the mask token's form) run here too, so a
bad value is a config error naming its field before any data is read.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdistill.errors import BadInput
from kdistill.text.augment import AugmentRules


class TransferSetSpec(BaseModel):
    """`copies` perturbed copies asked per training sentence (repeats are dropped), drawn from `seed`;
    the probabilities are Tang et al.'s SST-2 values unless given; `mask_token` None: the tokenizer's."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    copies: int = Field(gt=0)
    seed: int = 0
    mask_prob: float = Field(0.1, ge=0, le=1)
    replace_prob: float = Field(0.1, ge=0, le=1)
    ngram_prob: float = Field(0.25, ge=0, le=1)
    max_ngram: int = Field(5, ge=1)
    mask_token: str | None = None

    @model_validator(mode="after")
    def _rules_hold(self) -> TransferSetSpec:
        try:
            self.rules("[MASK]" if self.mask_token is None else self.mask_token)
        except BadInput as error:
            raise ValueError(str(error).removeprefix("augment: ").removeprefix("augment.")) from None
        return self

    def rules(self, mask_token: str) -> AugmentRules:
        """The perturbation rules, with the mask token of the tokenizer that will read the copies."""
        return AugmentRules(mask_prob=self.mask_prob, replace_prob=self.replace_prob, ngram_prob=self.ngram_prob,
                            max_ngram=self.max_ngram, mask_token=self.mask_token or mask_token)


__all__ = ["TransferSetSpec"]

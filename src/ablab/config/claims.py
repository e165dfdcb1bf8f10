"""The claims section: each claim of the course, the condition it is tested under (written
before the run) and the comparisons that decide it. A comparison sets a suite's variant against
another (its baseline unless `against` says) in one metric, with the direction the claim
expects (higher or lower for the variant); at `scale` default it reads the suite's default run,
at full the record its full recipe wrote (reproductions/<record>.json)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ablab.config.common import Strict


class Comparison(Strict):
    suite: str
    variant: str
    against: str | None = None  # None: the suite's baseline
    metric: str
    direction: Literal["higher", "lower"]  # what the claim expects of variant against `against`
    scale: Literal["default", "full"] = "default"
    record: str | None = None  # scale full: the record (its name) that holds the values
    # paired: across seeds (and test examples where there are predictions); exact: a
    # deterministic quantity (a parameter count) compared as it is; ensemble: the variant's
    # seed models averaged against its mean member, across test examples (a suite with
    # `ensemble: true`; no `against`)
    kind: Literal["paired", "exact", "ensemble"] = "paired"
    # True: the claim promises an effect, so "no difference larger than X" goes against it;
    # False: it promises no loss ("no worse"), so no difference is as claimed
    effect: bool = True

    @model_validator(mode="after")
    def _full_needs_a_record(self) -> Comparison:
        if self.scale == "full" and not self.record:
            raise ValueError("scale full reads a record: name it (record: <name>)")
        if self.kind == "ensemble" and (self.against is not None or self.scale == "full"):
            raise ValueError("kind ensemble sets a variant's ensemble against its own mean "
                             "member at default scale: no against, no scale full")  # fmt: skip
        return self


class Claim(Strict):
    claim: str = Field(min_length=1)  # the course's claim, in a line
    source: str = ""  # where the course makes it (note:lines)
    condition: str = ""  # what it is tested under, written before the run
    comparisons: list[Comparison] = []
    reason: str = ""  # why nothing tests it yet (no comparison): the ledger says so

    @model_validator(mode="after")
    def _tested_or_said_why(self) -> Claim:
        if not self.comparisons and not self.reason:
            raise ValueError("give comparisons, or a reason why nothing tests the claim yet")
        return self


ClaimId = Annotated[str, Field(pattern=r"^C\d{2}$")]

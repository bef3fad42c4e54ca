"""The engine's verdicts, without the engine (importing this does not load Hyperscan):
``Match`` (where and why a request was refused) and ``Judgement`` (a precise stage still
under way, resumed a slice at a time)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ("Judgement", "Match")


@dataclass(frozen=True, slots=True)
class Match:
    """Where and why a request was refused: ``rule`` is the rule class (``sqli`` ...),
    ``part`` the location (``args:id``, ``headers:user-agent``, ``body:json:user.name``)."""
    rule: str
    part: str


class Judgement:
    """A precise stage under way: ``resume()`` runs it for up to ``DEADLINE_S`` more and
    returns the verdict (None or a Match), or itself while there is more to judge."""

    __slots__ = ("_steps", "slices")

    def __init__(self, steps):
        self._steps = steps
        self.slices = 0

    def resume(self):
        self.slices += 1
        try:
            next(self._steps)
        except StopIteration as done:
            return done.value
        except Exception:  # noqa: BLE001 - fail closed, as inspect does
            return Match("waf_error", "engine")
        return self

"""Weight-sharing training strategies: which subnets each step trains, with which loss weight.

A strategy is a small class registered by name (:func:`register_strategy`). Each training step asks it for
a list of :class:`SubnetTask` (config, loss weight, teacher flag). The trainer runs them in order on the same
batch and accumulates their gradients before one optimizer step. The first task may be the *teacher* (the
max subnet, trained on the labels); with in-place distillation the other subnets learn from its detached soft
predictions. Strategies are pure functions of ``(step, rng)`` so that a resumed run samples exactly the subnets
an uninterrupted run would, and every data-parallel worker samples the same ones (the rng is seeded from the
step).

Built in:

* ``sandwich`` (BigNAS / AttentiveNAS): max + min + ``num_random`` random subnets per step.
* ``uniform``: one random subnet per step (single-path baseline, no teacher).
* ``progressive`` (Once-for-All progressive shrinking): the full network first, then elastic kernel, then
  kernel + depth, then everything (width, resolution, quantization, sparsity); channels are re-sorted by
  importance at each phase change.
* ``delayed`` (DεpS, delayed ε-shrinking): the full network alone for the first ``delay`` fraction (default
  50%) of the steps (channels are re-sorted by importance when shrinking starts), then sandwich sampling over
  the whole space with the smaller subnets' loss weight ramping linearly from 0 to 1 over ``ramp`` (default
  20%) of the steps (:meth:`DelayedShrinking.ramp_weight`). The weight scales their share of the summed gradient: with SGD and no gradient clipping that is
  their learning rate; AdamW's normalised update and a clipped gradient respond to it less than linearly.

Every strategy also takes ``attentive`` (default 0 = off; AttentiveNAS "worst-up" sampling): each random
subnet comes with ``attentive`` more random candidates, and the trainer trains whichever of them has the highest
loss on the step's batch (measured without gradients on up to 32 of its examples). The sandwich rule trains the
two ends every step; this spends the random slots on the subnets that currently lag furthest behind. With
data-parallel workers each one probes its own shard, so workers may train different candidates of a slot (their
gradients are averaged like any others).

Every strategy takes ``low_resolution_bias`` (default 0): random subnets then draw the resolution with weight
``(R - i) ** bias`` for the i-th smallest of R resolutions. The max subnet trains every weight at the largest
resolution each step, but at the smallest only the min subnet's slice is trained, so random subnets at low
resolution otherwise trail the min subnet.

Sandwich steps (``sandwich``, and the shrinking phases of ``progressive`` and ``delayed``) also take
``min_weight`` (default 1): the min subnet's loss weight relative to the random subnets'. The min subnet's weights
are a slice of every other subnet's and it is trained every step, a given random subnet never; below 1 it claims
less of those shared weights (on the bundled MNIST the random subnets sit only 0.1-0.3 points above it).

Example:
    >>> from search_spaces import mobilenetv3
    >>> import numpy as np
    >>> net = mobilenetv3.supernet("small", in_channels=1)
    >>> s = make_strategy("sandwich", net, total_steps=100, num_random=2)
    >>> [t.teacher for t in s.tasks(0, np.random.default_rng(0))]
    [True, False, False, False]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from nas.space import Config

__all__ = [
    "STRATEGIES",
    "DelayedShrinking",
    "ProgressiveShrinking",
    "Sandwich",
    "Strategy",
    "SubnetTask",
    "Uniform",
    "make_strategy",
    "register_strategy",
]


@dataclass(frozen=True)
class SubnetTask:
    """One subnet trained in a step: its config, loss weight and whether it is the distillation teacher.

    With ``candidates`` the trainer trains whichever of ``config`` and the candidates has the highest loss on
    the step's batch (attentive sampling).
    """

    config: Config
    weight: float = 1.0
    teacher: bool = False
    candidates: tuple[Config, ...] = ()


class Strategy:
    """Base class: subclasses set ``name`` and implement :meth:`tasks` (and :meth:`phase` if phased).

    Args:
        net: the supernet (its ``space`` and ``elastic_groups()`` are used).
        total_steps: number of optimizer steps in the whole run.
        num_random: random subnets per step (sandwich-like strategies).
        low_resolution_bias: favour low resolutions for the random subnets (see the module docs).
        attentive: extra random candidates per random subnet; the one with the highest loss is trained.
        min_weight: loss weight of the min subnet relative to the random ones in sandwich steps (default 1).
            Below 1 the min subnet, trained every step, claims less of the shared weights it shares with
            every other subnet (see the module docs).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        net: Any,
        total_steps: int,
        num_random: int = 2,
        low_resolution_bias: float = 0.0,
        attentive: int = 0,
        min_weight: float = 1.0,
        **options: Any,
    ):
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps} must be >= 1")
        if num_random < 0:
            raise ValueError(f"num_random={num_random} must be >= 0")
        if options:
            raise TypeError(f"strategy {self.name!r} got unknown options {sorted(options)}")
        self.space = net.space
        self.groups: dict[str, tuple[str, ...]] = _checked_groups(net)
        self.total_steps = int(total_steps)
        self.num_random = int(num_random)
        if low_resolution_bias < 0:
            raise ValueError(f"low_resolution_bias={low_resolution_bias} must be >= 0")
        self.low_resolution_bias = float(low_resolution_bias)
        if int(attentive) != attentive or attentive < 0:
            raise ValueError(
                f"attentive={attentive} must be a whole number >= 0 (extra candidates per subnet)"
            )
        self.attentive = int(attentive)
        if not 0 <= min_weight <= 1:
            raise ValueError(f"min_weight={min_weight} must lie in [0, 1] (the random subnets' weight is 1)")
        self.min_weight = float(min_weight)
        self._max, self._min = self.space.max(), self.space.min()

    def phase(self, step: int) -> str:
        """Name of the training phase at ``step``; the trainer re-sorts channels when it changes."""
        return "all"

    def tasks(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able description (stored in checkpoints; a resumed run must match it)."""
        out: dict[str, Any] = {
            "name": self.name,
            "num_random": self.num_random,
            "total_steps": self.total_steps,
        }
        if self.low_resolution_bias:  # only when set, so runs checkpointed before the option still resume
            out["low_resolution_bias"] = self.low_resolution_bias
        if self.attentive:
            out["attentive"] = self.attentive
        if self.min_weight != 1.0:
            out["min_weight"] = self.min_weight
        return out

    # ------------------------------------------------------------------ helpers
    def sample(self, rng: np.random.Generator, elastic_kinds: tuple[str, ...] | None = None) -> Config:
        """A random config; dimensions outside ``elastic_kinds`` (None = all) keep their max value."""
        cfg = self._bias_resolution(self.space.sample(rng), rng)
        if elastic_kinds is None:
            return cfg
        free = {n for kind in elastic_kinds for n in self.groups.get(kind, ())}
        values = {n: (cfg[n] if n in free else self._max[n]) for n in self.space.names}
        return self.space.canonical(values)

    def _bias_resolution(self, cfg: Config, rng: np.random.Generator) -> Config:
        """Redraw the resolution with weights ``(R - i) ** low_resolution_bias`` for the i-th smallest of R.

        Why: the max subnet trains every weight at the largest resolution each step, while at the smallest
        only the min subnet's slice is trained; random subnets at low resolution then lag behind the min.
        A positive bias spends more of the random subnets on low resolutions (0 = uniform).
        """
        names = self.groups.get("resolution", ())
        if self.low_resolution_bias == 0 or len(names) != 1:
            return cfg
        values = self.space[names[0]].values
        p = np.arange(len(values), 0, -1, dtype=np.float64) ** self.low_resolution_bias
        choice = values[int(rng.choice(len(values), p=p / p.sum()))]
        return self.space.canonical(cfg.replace(**{names[0]: choice}))

    def sandwich(
        self, rng: np.random.Generator, elastic_kinds: tuple[str, ...] | None = None, weight: float = 1.0
    ) -> list[SubnetTask]:
        """max (teacher) + the smallest subnet of the elastic part + ``num_random`` random subnets."""
        if elastic_kinds is None:
            smallest = self._min
        else:
            free = {n for kind in elastic_kinds for n in self.groups.get(kind, ())}
            smallest = self.space.canonical(
                {n: (self._min[n] if n in free else self._max[n]) for n in self.space.names}
            )
        tasks = [SubnetTask(self._max, 1.0, True), SubnetTask(smallest, weight * self.min_weight)]
        tasks += [self.random_task(rng, elastic_kinds, weight) for _ in range(self.num_random)]
        return tasks

    def random_task(
        self, rng: np.random.Generator, elastic_kinds: tuple[str, ...] | None = None, weight: float = 1.0
    ) -> SubnetTask:
        """A random subnet with its ``attentive`` extra candidates (none when attentive sampling is off)."""
        config = self.sample(rng, elastic_kinds)
        candidates = tuple(self.sample(rng, elastic_kinds) for _ in range(self.attentive))
        return SubnetTask(config, weight, candidates=candidates)


def _checked_groups(net: Any) -> dict[str, tuple[str, ...]]:
    """``net.elastic_groups()``, refused when a kind or a dimension name is not one there is.

    Why: phased strategies make the dimensions of a kind elastic by name, so a misspelt kind (``"kernels"``)
    or dimension, or a bare string (iterated letter by letter), left those dimensions at their max value for
    most of the run without a word.
    """
    from nas.supernet import ELASTIC_GROUP_KINDS

    where = f"{type(net).__name__}.elastic_groups()"
    groups = net.elastic_groups()
    if not isinstance(groups, dict):
        raise TypeError(f"{where} must return a dict kind -> dimension names, got {type(groups).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for kind, names in groups.items():
        if kind not in ELASTIC_GROUP_KINDS:
            raise ValueError(f"{where}: {kind!r} is not a kind; use {', '.join(ELASTIC_GROUP_KINDS)}")
        if isinstance(names, str):
            raise ValueError(f"{where}: {kind!r} must list dimension names, e.g. ({names!r},), got {names!r}")
        unknown = [n for n in names if n not in net.space]
        if unknown:
            raise ValueError(
                f"{where}: {kind!r} names {', '.join(map(repr, unknown[:3]))}, not dimensions of space "
                f"{net.space.name!r} ({', '.join(net.space.names[:6])}{', ...' if len(net.space) > 6 else ''})"
            )
        out[kind] = tuple(names)
    return out


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding a strategy to :data:`STRATEGIES` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, net: Any, total_steps: int, **options: Any) -> Strategy:
    """Build a registered strategy by name."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(sorted(STRATEGIES))}") from None
    return cls(net, total_steps, **options)


@register_strategy
class Sandwich(Strategy):
    """The sandwich rule: max + min + ``num_random`` random subnets every step."""

    name = "sandwich"

    def tasks(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        return self.sandwich(rng)


@register_strategy
class Uniform(Strategy):
    """One uniformly sampled subnet per step (single-path one-shot baseline; no teacher)."""

    name = "uniform"

    def tasks(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        # Its one subnet is a random one, so ``attentive`` applies to it as to the sandwich's random slots.
        return [self.random_task(rng)]


@register_strategy
class ProgressiveShrinking(Strategy):
    """Once-for-All progressive shrinking: full -> elastic kernel -> + depth -> + width (and the rest).

    ``fractions`` gives each phase's share of the steps (default: equal shares). Resolution, quantization
    and sparsity become elastic in the last phase together with width. A phase that makes nothing new
    elastic (the kernel phase of a supernet without elastic kernels, such as Once-for-All's ResNet) is skipped:
    its share goes to the phase after it, and the default shares are split among the phases that remain.

    The first phase trains the max subnet alone. Each later phase trains by the sandwich rule within the
    dimensions elastic so far (the others at their max): the max subnet (the teacher), the smallest subnet of
    those dimensions and ``num_random`` random ones. Where this differs from the paper: Once-for-All samples the
    resolution in every phase, trains each phase as a run of its own (a new optimizer and learning-rate
    schedule; here one warmup + cosine schedule spans all phases and only the optimizer state is reset at each
    change, when channels are re-sorted), distils from a fixed, separately trained full network, and splits
    the depth and width phases into two stages each (the smallest value joins in the second).

    Example:
        >>> from search_spaces import mobilenetv3, resnet
        >>> ProgressiveShrinking(mobilenetv3.supernet("small"), 100).fractions
        (0.25, 0.25, 0.25, 0.25)
        >>> [round(f, 3) for f in ProgressiveShrinking(resnet.supernet("small"), 90).fractions]
        [0.333, 0.0, 0.333, 0.333]
    """

    name = "progressive"
    PHASES: ClassVar[tuple[tuple[str, tuple[str, ...] | None], ...]] = (
        ("full", ()),
        ("kernel", ("kernel",)),
        ("depth", ("kernel", "depth")),
        ("width", None),
    )

    def __init__(
        self,
        net: Any,
        total_steps: int,
        num_random: int = 2,
        fractions: tuple[float, ...] | None = None,
        **options: Any,
    ):
        super().__init__(net, total_steps, num_random, **options)
        applies = self._phases_that_apply()
        if fractions is None:
            fractions = tuple(1.0 if a else 0.0 for a in applies)
        if len(fractions) != len(self.PHASES) or min(fractions) < 0 or sum(fractions) <= 0:
            raise ValueError(f"fractions={fractions!r}: need {len(self.PHASES)} non-negative shares")
        shares = [float(f) for f in fractions]
        for i, a in enumerate(applies):
            if not a:  # a phase with nothing new to shrink: its steps go to the next phase
                shares[i + 1] += shares[i]
                shares[i] = 0.0
        total = sum(shares)
        self.fractions = tuple(f / total for f in shares)
        # Where each phase ends (the next one's first step). Rounded before the ceiling: float sums such as
        # 0.1 + 0.2 land just above a whole step (3.0000000000000004 of 10) and gave that phase's step to the
        # phase before it (fractions 0.7/0.1/0.1/0.1 of 10 steps skipped the kernel phase entirely).
        self._bounds = np.ceil(np.round(np.cumsum(self.fractions) * self.total_steps, 6))

    def _phases_that_apply(self) -> list[bool]:
        """Per phase: whether it makes a dimension elastic that the phase before it kept at its max.

        The first and the last phase always apply (the last makes everything elastic).
        """
        applies, before = [], set()
        for i, (_, kinds) in enumerate(self.PHASES):
            if kinds is None:
                applies.append(True)
                continue
            now = {n for kind in kinds for n in self.groups.get(kind, ())}
            applies.append(i == 0 or bool(now - before))
            before = now
        return applies

    def _phase_index(self, step: int) -> int:
        return min(int(np.searchsorted(self._bounds, step, side="right")), len(self.PHASES) - 1)

    def phase(self, step: int) -> str:
        return self.PHASES[self._phase_index(step)][0]

    def tasks(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        _, kinds = self.PHASES[self._phase_index(step)]
        if kinds == ():
            return [SubnetTask(self._max, 1.0, True)]
        return self.sandwich(rng, kinds)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "fractions": list(self.fractions)}


@register_strategy
class DelayedShrinking(Strategy):
    """DεpS delayed shrinking: full network until ``delay`` of training, then sandwich with a ramped weight."""

    name = "delayed"

    def __init__(
        self,
        net: Any,
        total_steps: int,
        num_random: int = 2,
        delay: float = 0.5,
        ramp: float = 0.2,
        **options,
    ):
        super().__init__(net, total_steps, num_random, **options)
        if not 0.0 <= delay < 1.0 or not 0.0 <= ramp <= 1.0:
            raise ValueError(f"delay={delay} must be in [0, 1) and ramp={ramp} in [0, 1]")
        self.delay, self.ramp = float(delay), float(ramp)
        self.start = round(self.delay * self.total_steps)

    def phase(self, step: int) -> str:
        return "full" if step < self.start else "shrink"

    def ramp_weight(self, step: int) -> float:
        """Loss weight (= relative learning rate under SGD) of the non-max subnets at ``step``.

        0 before shrinking starts; then ``k / n`` at the k-th step of shrinking (k = 1, 2, ...) for
        ``n = ramp * total_steps``, so 1 from the n-th step of shrinking on (the max subnet always has 1).

        Example:
            >>> from search_spaces import mobilenetv3
            >>> s = DelayedShrinking(mobilenetv3.supernet("small"), 100, delay=0.5, ramp=0.04)
            >>> [s.ramp_weight(step) for step in (49, 50, 51, 52, 53, 54)]
            [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        """
        if step < self.start:
            return 0.0
        span = self.ramp * self.total_steps
        return 1.0 if span <= 0 else min(1.0, (step - self.start + 1) / span)

    def tasks(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        if step < self.start:
            return [SubnetTask(self._max, 1.0, True)]
        return self.sandwich(rng, None, weight=self.ramp_weight(step))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "delay": self.delay, "ramp": self.ramp}

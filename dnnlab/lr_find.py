"""`dnnlab lr-find`: the learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training
Neural Networks"; fastai's `lr_find`) on a config's own net, data and optimizer.

From the config's initialization, one optimizer step per minibatch at a rate that grows
geometrically from `min_lr` to `max_lr` over `steps` steps (`schedule`, an optax schedule read
at the step count inside the compiled step, which sets the optimizer's injected learning rate:
one program for every rate). Each step's minibatch cross-entropy is recorded and smoothed
(`ExponentialAverage`: beta 0.98 with bias correction, fastai's); the test stops when the
smoothed loss exceeds `STOP_FACTOR` times its minimum or a loss is non-finite. A rule
(`SUGGESTIONS`; `minimum` by default: a tenth of the rate at the smoothed loss's lowest point)
reads the suggested rate off the smoothed curve.

The run's learning-rate schedule is replaced by a constant one during the test: the suggestion
is the rate the schedule starts from (or peaks at). Every seed of `train.seeds` shares it: the
test runs at `seed`. Pretraining (`model.pretrain`) is not run: the test starts from the
initialization. Nothing here prints.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

BETA = 0.98  # fastai's smoothing of the recorder's loss
STOP_FACTOR = 4.0  # stop once the smoothed loss exceeds 4x its minimum (fastai's stop_div)
SKIP_START = 0.1  # the rules skip the first tenth of the steps (the loss has not moved yet) ...
SKIP_END = 5  # ... and the last five (the divergence that stopped the test), as fastai does
MIN_POINTS = 8  # a curve with fewer points left has no valley to read
DEFAULT_STEPS = 100  # steps of a range test (fastai's num_it)


class LrFindError(Exception):
    """A range test that cannot run as asked; `str()` is the message for the user."""


def schedule(min_lr: float, max_lr: float, steps: int) -> Callable[[Any], Any]:
    """The rate of each step: `min_lr` at step 0, `max_lr` at step `steps` - 1, geometric between
    (optax.exponential_decay with a growth factor)."""
    import optax

    growth = (max_lr / min_lr) ** (1.0 / max(steps - 1, 1))
    return optax.exponential_decay(min_lr, transition_steps=1, decay_rate=growth)


class ExponentialAverage:
    """The bias-corrected exponential moving average: avg_i = beta avg_{i-1} + (1 - beta) x_i,
    shown as avg_i / (1 - beta^(i+1)) (Adam's correction: the first value is x_0 itself)."""

    def __init__(self, beta: float = BETA) -> None:
        self.beta, self.avg, self.count = beta, 0.0, 0

    def update(self, x: float) -> float:
        self.avg = self.beta * self.avg + (1 - self.beta) * x
        self.count += 1
        return self.avg / (1 - self.beta**self.count)


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """Every step's smoothed loss (`ExponentialAverage`)."""
    avg = ExponentialAverage(beta)
    return [avg.update(x) for x in losses]


def should_stop(smoothed: float, best: float, raw: float) -> Optional[str]:
    """Why the test stops after a step whose loss is `raw` and smoothed loss `smoothed` (`best`:
    the smallest smoothed loss so far, this one's included), or None: a non-finite loss, or a
    smoothed loss above STOP_FACTOR times the smallest."""
    if not (math.isfinite(raw) and math.isfinite(smoothed)):
        return "non-finite"
    if smoothed > STOP_FACTOR * best:
        return "diverged"
    return None


# ---------------------------------------------------------------- the rules


def _window(n: int, total: int) -> tuple[int, int]:
    """The points the rules read: [first, last) of `n` recorded steps of a test of `total`."""
    return int(total * SKIP_START), max(n - SKIP_END, 0)


def steepest(lrs: np.ndarray, smoothed: np.ndarray) -> Optional[int]:
    """The index where the smoothed loss falls fastest against log(lr) (Smith's "the loss
    decreases most rapidly"; fastai's `steep`, Lightning's suggestion)."""
    if len(lrs) < MIN_POINTS:
        return None
    slope = np.gradient(smoothed, np.log(lrs))
    return int(np.argmin(slope))


def valley(lrs: np.ndarray, smoothed: np.ndarray) -> Optional[int]:
    """fastai's `valley`: the longest valley of the curve (its longest strictly decreasing
    subsequence, from where it starts to where it ends), and the point halfway along it."""
    n = len(smoothed)
    if n < MIN_POINTS:
        return None
    lds = np.ones(n, np.int64)  # the longest decreasing subsequence ending at each point
    for i in range(1, n):
        above = smoothed[:i] > smoothed[i]
        if above.any():
            lds[i] = lds[:i][above].max() + 1
    end = int(np.argmax(lds))  # its first longest
    start = end - int(lds[end])
    sections = (end - start) / 3
    return max(0, start + int(sections) + int(sections / 2))


def minimum(lrs: np.ndarray, smoothed: np.ndarray) -> Optional[int]:
    """A tenth of the rate at the smoothed loss's minimum (fastai's `minimum`): the last rate
    at which the loss still falls, backed off by a decade."""
    if len(lrs) < MIN_POINTS:
        return None
    target = lrs[int(np.argmin(smoothed))] / 10
    return int(np.argmin(np.abs(np.log(lrs) - np.log(target))))


# `--rule` -> the rule; the first is the default. Measured against the rate a grid of half-decades
# finds best on validation loss (docs/diagnosis.md, "Finding a learning rate"): on 12 configs (the
# quickstart with Adam and with SGD, the lecture's five activations and five optimizers, the small
# CNN with batch norm) `minimum` was within a decade of the grid's best on all 12 (0.1 to 0.8
# decades off), `valley` on 9 (its longest decreasing run starts in the flat, noisy part of the
# curve when the loss moves only late: 1.1 and 1.3 decades low on the quickstart; 1.0 on the CNN)
# and `steepest` on 5 (up to 2.2 decades off). The median of the three was tried too: it follows
# two rules that fail together (valley and steepest, a decade low on the CNN).
SUGGESTIONS: dict[str, Callable[[np.ndarray, np.ndarray], Optional[int]]] = {"minimum": minimum, "valley": valley, "steepest": steepest}
RULE_WORDS = {
    "minimum": "a tenth of the rate at which the smoothed loss is lowest: the fastest rate that still lowers the "
    "loss, backed off by a decade",
    "valley": "fastai's valley: halfway along the longest stretch where the smoothed loss keeps falling",
    "steepest": "the steepest descent of the smoothed loss against log(lr): where the loss falls fastest",
}


# ---------------------------------------------------------------- the test


@dataclass
class RangeTest:
    """One range test's records and its suggestions."""

    lrs: list[float]  # each step's rate
    losses: list[Optional[float]]  # each step's minibatch cross-entropy (None: non-finite)
    smoothed: list[Optional[float]]
    stopped: str  # diverged, non-finite, interrupted, or max (every step ran)
    steps: int  # asked for
    min_lr: float
    max_lr: float
    rule: str
    suggestions: dict[str, Optional[float]] = field(default_factory=dict)  # rule -> rate
    seconds: float = 0.0
    steps_per_epoch: int = 0
    batch_size: int = 0
    compiled: dict[str, int] = field(default_factory=dict)  # program -> compilations (1 each)
    notes: list[str] = field(default_factory=list)

    @property
    def suggestion(self) -> Optional[float]:
        return self.suggestions.get(self.rule)

    @property
    def epochs(self) -> float:
        """The test's cost in epochs of the config's training set."""
        return len(self.lrs) / max(self.steps_per_epoch, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "suggestion": self.suggestion, "epochs": self.epochs, "rule_words": RULE_WORDS[self.rule]}


def suggest(lrs: list[float], smoothed: list[Optional[float]], total: int) -> dict[str, Optional[float]]:
    """Every rule's rate on the recorded curve (None where too few points are left)."""
    first, last = _window(len(lrs), total)
    x = np.asarray(lrs[first:last], np.float64)
    y = np.asarray([np.nan if v is None else v for v in smoothed[first:last]], np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    out: dict[str, Optional[float]] = {}
    for name, rule in SUGGESTIONS.items():
        i = rule(x, y)
        out[name] = None if i is None else float(x[i])
    return out


def range_test(
    cfg: Any, data: Any, *, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = DEFAULT_STEPS, rule: str = "minimum",
    on_step: Optional[Callable[[int, float, float], None]] = None,
) -> RangeTest:
    """Run the range test of `cfg` (a validated Config) on `data` (its loaded Dataset).

    Args:
        min_lr, max_lr, steps: the rates, from the first step's to the last's.
        rule: the suggestion to lead with (a key of SUGGESTIONS); every rule's is computed.
        on_step: told (step, lr, loss) after each step.
    Returns:
        The RangeTest. Ctrl-C ends it early (stopped: interrupted) with the steps so far.
    Raises:
        LrFindError for settings that cannot run.
    """
    problem = check(min_lr, max_lr, steps, rule)
    if problem:
        raise LrFindError(problem)
    import jax

    from dnnlab import interrupt, train

    test_cfg, notes = _test_config(cfg)
    train.use_compile_cache()
    setup = train.prepare(test_cfg, data)
    lr_at = schedule(min_lr, max_lr, steps)
    step_jit = jax.jit(partial(_lr_step, lr_at=lr_at, model=setup.model, tx=setup.tx, reg=test_cfg.regularization), donate_argnums=0)
    n, batch_size = setup.n, setup.batch_size
    batches_jit = jax.jit(lambda base, e: train.batches(n, batch_size, jax.random.fold_in(base, e)))
    init_jit = jax.jit(partial(train.init_state, model=setup.model, tx=setup.tx))
    result = RangeTest([], [], [], "max", steps, min_lr, max_lr, rule, steps_per_epoch=setup.steps_per_epoch,
                       batch_size=batch_size, notes=notes)
    avg, best = ExponentialAverage(), math.inf
    t0 = time.perf_counter()
    with interrupt.deferred():
        try:
            state, shuffle_key, dropout_key = init_jit(np.int32(test_cfg.seed), train._injected(test_cfg))
            for i in range(steps):
                epoch, step = divmod(i, setup.steps_per_epoch)
                if step == 0:  # each epoch's order, as training draws it (`train.batches`)
                    idx_SxB, w_SxB = batches_jit(shuffle_key, np.int32(epoch + 1))
                state, loss, lr = step_jit(state, setup.x_N, setup.y_N, idx_SxB, w_SxB, np.int32(step), dropout_key)
                raw, smoothed = float(loss), avg.update(float(loss))
                result.lrs.append(float(lr))
                result.losses.append(raw if math.isfinite(raw) else None)
                result.smoothed.append(smoothed if math.isfinite(smoothed) else None)
                best = min(best, smoothed)
                if on_step is not None:
                    on_step(i + 1, result.lrs[-1], raw)
                stop = should_stop(smoothed, best, raw)
                interrupt.stop_point()
                if stop:
                    result.stopped = stop
                    break
        except KeyboardInterrupt:
            result.stopped = "interrupted"
    result.seconds = time.perf_counter() - t0
    result.compiled = {"step": step_jit._cache_size(), "batches": batches_jit._cache_size(), "init": init_jit._cache_size()}
    result.suggestions = suggest(result.lrs, result.smoothed, steps)
    return result


def _lr_step(state, x_N, y_N, idx_SxB, w_SxB, i, dropout_key, *, lr_at, model, tx, reg):
    """One training step at the schedule's rate for the state's step count: the rate goes into
    the optimizer's injected hyperparameters (`optim.with_hyperparameters`), so every rate runs
    in this one program. Returns the state, the minibatch's mean cross-entropy and the rate."""
    import jax.numpy as jnp

    from dnnlab.optim import with_hyperparameters
    from dnnlab.train import train_step

    lr = lr_at(state.step)
    values = {**state.opt_state.hyperparams, "lr": lr}
    state = state._replace(opt_state=with_hyperparameters(state.opt_state, values))
    w_B = w_SxB[i]
    state, out = train_step(state, x_N[idx_SxB[i]], y_N[idx_SxB[i]], w_B, dropout_key, model=model, tx=tx, reg=reg)
    return state, out["ce_sum"] / jnp.maximum(jnp.sum(w_B), 1.0), lr


def check(min_lr: float, max_lr: float, steps: int, rule: str) -> Optional[str]:
    """What is wrong with these settings (the option named), or None."""
    if not (math.isfinite(min_lr) and min_lr > 0):
        return f"--min {min_lr}: give a rate above 0, e.g. 1e-7"
    if not (math.isfinite(max_lr) and max_lr > min_lr):
        return f"--max {max_lr}: give a rate above --min ({min_lr:g}), e.g. 10"
    if steps < MIN_POINTS + SKIP_END + 2:
        return f"--steps {steps}: give at least {MIN_POINTS + SKIP_END + 2} steps (100 is usual)"
    if rule not in SUGGESTIONS:
        return f"--rule {rule}: choose one of {', '.join(SUGGESTIONS)}"
    return None


def _test_config(cfg: Any) -> tuple[Any, list[str]]:
    """The config the test trains: a constant schedule (the rate is the test's), one device, one
    seed; and notes on what differs from the run."""
    notes = []
    opt, tr = cfg.optimizer, cfg.train
    if opt.schedule != "constant":
        notes.append(f"optimizer.schedule is {opt.schedule}: the test runs at a constant rate per step, and "
                     "the suggestion is the rate the schedule starts from (its peak)")
    if tr.seeds > 1:
        notes.append(f"train.seeds is {tr.seeds}: the test runs at seed {cfg.seed}; every seed shares its suggestion")
    if cfg.model.pretrain != "none":
        notes.append(f"model.pretrain is {cfg.model.pretrain}: the test starts from the initialization, not from "
                     "the pretrained weights")
    update = {
        "optimizer": opt.model_copy(update={"schedule": "constant", "warmup_epochs": 0}),
        "train": tr.model_copy(update={"devices": 1, "seeds": 1}),
    }
    return cfg.model_copy(update=update), notes


# ---------------------------------------------------------------- output


def shown(lr: float) -> str:
    """A rate as the `--set` line writes it: two significant digits."""
    return f"{lr:.2g}"


def set_line(lr: float) -> str:
    """The option to paste, shell-quoted."""
    from dnnlab import runs

    return runs.set_options([f"optimizer.lr={shown(lr)}"])


def write(result: RangeTest, folder: Path, config: str) -> list[str]:
    """lr_find.json and lr_find.png into `folder`; returns problems (a plot not drawn)."""
    from dnnlab import runs

    folder.mkdir(parents=True, exist_ok=True)
    out = {"config": config, **result.to_dict()}
    if result.suggestion is not None:
        out["set"] = set_line(result.suggestion)
    runs.atomic_write_text(folder / "lr_find.json", json.dumps(out, indent=2) + "\n")
    try:
        plot(result, folder / "lr_find.png")
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the records
        return [f"lr_find.png not drawn: {type(exc).__name__}: {exc}"]
    return []


def plot(result: RangeTest, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.asarray(result.lrs)
    raw = np.asarray([np.nan if v is None else v for v in result.losses])
    sm = np.asarray([np.nan if v is None else v for v in result.smoothed])
    ax.plot(x, raw, color="0.75", lw=0.8, label="minibatch loss")
    ax.plot(x, sm, color="C0", lw=2, label=f"smoothed (exponential, beta {BETA:g}, bias-corrected)")
    for k, (name, lr) in enumerate(result.suggestions.items()):
        if lr is None:
            continue
        y = sm[int(np.argmin(np.abs(np.log(x) - math.log(lr))))]
        lead = name == result.rule
        ax.axvline(lr, color="C3" if lead else "C2", ls="-" if lead else ":", lw=1.2)
        ax.plot([lr], [y], "o", color="C3" if lead else "C2", label=f"{name}: {shown(lr)}{' (suggested)' if lead else ''}")
    finite = sm[np.isfinite(sm)]
    if finite.size:  # from below the minimum to a little above the start: the divergence runs off the top
        low, top = finite.min(), min(finite.max(), max(finite[0], finite.min()) * 1.2)
        ax.set_ylim(low - 0.05 * (top - low) - 1e-6, top)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title(f"range test: {len(result.lrs)} steps, stopped: {result.stopped}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

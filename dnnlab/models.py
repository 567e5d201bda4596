"""The architecture registry. A model is a pair of pure functions over plain pytrees:

    init(key) -> params
    apply(params, x, *, key, train) -> (logits, aux)

`aux` holds, per hidden layer, the pre-activations (`pre`) and outputs (`post`) that the
diagnostics read; under jit, whatever nobody reads is dropped by XLA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import activations
from dnnlab.config import ModelConfig, residual_blocks
from dnnlab.config import stack_length as config_stack_length
from dnnlab.config import stack_plan as config_stack_plan

Params = Any  # a pytree: {"hidden": [{"w", "b", ...}, ...], "out": {"w", "b"}}

INITIALIZERS: dict[str, Callable[[], jax.nn.initializers.Initializer]] = {
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "glorot_normal": jax.nn.initializers.glorot_normal,
    "he_uniform": jax.nn.initializers.he_uniform,
    "he_normal": jax.nn.initializers.he_normal,
    "lecun_normal": jax.nn.initializers.lecun_normal,
}


@dataclass(frozen=True)
class Model:
    init: Callable[[jax.Array], Params]
    apply: Callable[..., tuple[jax.Array, dict[str, Any]]]
    activation: activations.Activation


def dropout(x: jax.Array, rate: float, key: Optional[jax.Array], train: bool) -> jax.Array:
    """Inverted dropout: keep each unit with probability 1 - rate and scale it by 1/(1 - rate).

    The expected activation in training equals the evaluation activation, so evaluation is the
    identity (the same as classic dropout's weights-times-(1 - rate) at test; see the tests).
    """
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout in training needs a PRNG key")
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _initializer(cfg: ModelConfig, act: activations.Activation) -> jax.nn.initializers.Initializer:
    if cfg.init != "auto":
        return INITIALIZERS[cfg.init]()
    if act.family == "saturating":
        return jax.nn.initializers.glorot_uniform()
    # the max of k Gaussian pieces keeps about all of their variance (ReLU keeps half), so
    # He's factor 2 would double the signal at every maxout layer: LeCun's 1/fan_in instead
    return jax.nn.initializers.lecun_normal() if act.name == "maxout" else jax.nn.initializers.he_normal()


def conv2d(x_BHWC: jax.Array, w_KKIO: jax.Array, stride: int = 1) -> jax.Array:
    """'SAME' convolution, NHWC inputs and HWIO kernels."""
    return jax.lax.conv_general_dilated(
        x_BHWC, w_KKIO, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def max_pool(x_BHWC: jax.Array, size: int = 2) -> jax.Array:
    """Non-overlapping size x size max pooling ('VALID': a ragged edge is dropped). The gradient
    reaches each window's maximum only, as maxout's reaches only the winning piece. Written as
    a reshape and a max: on the CPU, XLA's reduce_window gradient (select-and-scatter) is ~4x
    slower than this."""
    b, h, w, c = x_BHWC.shape
    h2, w2 = h // size, w // size
    x = x_BHWC[:, : h2 * size, : w2 * size, :].reshape(b, h2, size, w2, size, c)
    return jnp.max(x, axis=(2, 4))


BN_MOMENTUM = 0.9  # running = 0.9 * running + 0.1 * batch (PyTorch's default)
BN_EPS = 1e-5


def batch_norm(z: jax.Array, layer: Params, stats: Optional[Params], train: bool) -> tuple[jax.Array, Optional[Params]]:
    """Batch normalization over every axis but the channels (Ioffe & Szegedy 2015).

    Training normalizes with the batch's statistics and returns the updated running averages;
    evaluation normalizes with the running averages `stats` and returns them unchanged.
    """
    if stats is None:
        return z, None
    if train:
        axes = tuple(range(z.ndim - 1))
        mean, var = jnp.mean(z, axis=axes), jnp.var(z, axis=axes)
        new = jax.tree_util.tree_map(
            lambda old, batch: BN_MOMENTUM * old + (1.0 - BN_MOMENTUM) * jax.lax.stop_gradient(batch),
            stats, {"mean": mean, "var": var},
        )
    else:
        mean, var, new = stats["mean"], stats["var"], stats
    return (z - mean) * jax.lax.rsqrt(var + BN_EPS) * layer["scale"] + layer["offset"], new


def split_stats(params: Params) -> tuple[Params, Any]:
    """(trainable parameters, running statistics or None): the optimizer sees only the first."""
    if isinstance(params, dict) and "batch_stats" in params:
        return {k: v for k, v in params.items() if k != "batch_stats"}, params["batch_stats"]
    return params, None


def merge_stats(trainable: Params, stats: Any) -> Params:
    """Inverse of `split_stats`."""
    return trainable if stats is None else {**trainable, "batch_stats": stats}


def stack_params(params: Params) -> Params:
    """The scanned layout of an MLP's params: hidden layers 1..L-1 as one stacked "stack" entry."""
    return {**params, "hidden": params["hidden"][:1], "stack": stack_trees(params["hidden"][1:])}


def unstack_params(params: Params) -> Params:
    """The unrolled layout (one entry per hidden layer) of any params."""
    if "stack" not in params:
        return params
    n = jax.tree_util.tree_leaves(params["stack"])[0].shape[0]
    rest = {k: v for k, v in params.items() if k != "stack"}
    return {**rest, "hidden": list(params["hidden"]) + unstack_tree(params["stack"], n)}


def replace_hidden(params: Params, hidden: list[Params]) -> Params:
    """`params` with its hidden layers replaced by `hidden` (one dict per layer, input to output),
    in the layout of `params` (restacked when its stack is scanned)."""
    flat = {**unstack_params(params), "hidden": list(hidden)}
    return stack_params(flat) if "stack" in params else flat


def layers(params: Params) -> list[Params]:
    """Every conv and hidden layer's dict, input to output, whatever the layout (the classifier
    excluded); for the per-layer instruments."""
    return list(params.get("conv", [])) + list(unstack_params(params)["hidden"])


def stack_trees(trees: list[Any]) -> Any:
    """A list of equally shaped pytrees as one pytree with a leading layer axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree: Any, n: int) -> list[Any]:
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], tree) for i in range(n)]


@dataclass(frozen=True)
class StackPlan:
    """How a stack of identical layers is compiled: unrolled, or a lax.scan with `unroll` layers
    per iteration (see `plan_stack`)."""

    scanned: bool = False
    unroll: int = 1


# Which stacks are scanned is decided in the config, without JAX (config.stack_length and
# config.stack_plan: measured on a 2-core CPU, bench/depth.py and docs/speed.md).
stack_length = config_stack_length


def plan_stack(cfg: ModelConfig, stack: str = "auto", unroll: Optional[int] = None) -> StackPlan:
    """How to compile the model's stack of identical layers (`train.stack`, `train.unroll`)."""
    return StackPlan(*config_stack_plan(cfg, stack, unroll))


def run_stack(body: Callable, h: jax.Array, layers: list[Any], plan: StackPlan) -> tuple[jax.Array, list[Any]]:
    """Apply `body(h, layer) -> (h, out)` over `layers` in order; returns (h, [out per layer]).

    Scanned, the layers' pytrees are stacked inside the traced program (the parameters keep one
    entry per layer, so checkpoints and the per-layer instruments see every layer) and the
    outputs are unstacked again.
    """
    if not layers:
        return h, []
    if not plan.scanned or len(layers) < 2:
        outs = []
        for layer in layers:
            h, out = body(h, layer)
            outs.append(out)
        return h, outs
    h, outs = jax.lax.scan(body, h, stack_trees(layers), unroll=min(plan.unroll, len(layers)))
    return h, unstack_tree(outs, len(layers))


def _layer_params(
    init_fn: jax.nn.initializers.Initializer, key: jax.Array, shape: tuple[int, ...], units: int,
    act: activations.Activation, norm: bool,
) -> Params:
    """One conv or dense layer: weights, then a bias (or batch norm's scale and offset)."""
    out = shape[-1]
    layer = {"w": init_fn(key, shape, jnp.float32)}
    if norm:
        layer.update(scale=jnp.ones((out,), jnp.float32), offset=jnp.zeros((out,), jnp.float32))
    else:
        layer["b"] = jnp.zeros((out,), jnp.float32)
    layer.update(act.extra_params(units))
    return layer


def _bn_stats(channels: int) -> Params:
    return {"mean": jnp.zeros((channels,), jnp.float32), "var": jnp.ones((channels,), jnp.float32)}


def _shift(layer: Params) -> jax.Array | float:
    return layer.get("b", 0.0)


def _with_shortcut(z: jax.Array, shortcut: Optional[jax.Array], pieces: int) -> jax.Array:
    # each of a unit's pieces gets the shortcut: max_k(z_k + s) = s + max_k z_k
    if shortcut is None:
        return z
    return z + (jnp.repeat(shortcut, pieces, axis=-1) if pieces > 1 else shortcut)


def _output_init(num_classes: int) -> jax.nn.initializers.Initializer:
    """The output layer's initializer under `model.init: auto`: glorot for a classifier; for the
    one linear unit of a regression (`data.task: regression`, one output) a variance of
    1 / (3 fan_in) (PyTorch's default for a linear layer): glorot's 2 / (fan_in + 1) is He's
    scale, and a fresh net's outputs would add a variance of 1-4 to the standardized targets'
    (an initial loss of 1.5-5 where predicting the mean costs 1); at 1 / (3 fan_in) it starts
    near 1."""
    if num_classes == 1:
        return jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    return jax.nn.initializers.glorot_uniform()


def build_feedforward(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, plan: StackPlan = StackPlan()
) -> Model:
    """The MLP, and the CNN (conv blocks, then the MLP's dense layers) when `cfg.arch` is cnn.

    Params: {"conv": [{"w", "b", ...}], "hidden": [{"w", "b", ...}], "out": {"w", "b"}}, and with
    `norm: batch` each layer has "scale" and "offset" instead of "b", and "batch_stats" holds
    the running statistics, one entry per layer. Under a scanned `plan`, hidden layers 1..L-1
    (equal widths, no residual pairs) run as one lax.scan.
    """
    act = activations.get(cfg)
    widths = cfg.layer_widths
    w_init = _initializer(cfg, act)
    # the classifier gets glorot under `auto`: He-scaled logits start far from ln(C)
    out_init = _output_init(num_classes) if cfg.init == "auto" else w_init
    channels = tuple(cfg.channels) if cfg.arch == "cnn" else ()
    if channels and len(input_shape) != 3:
        raise ValueError(f"a cnn needs image inputs (H, W, C); got input shape {input_shape}")
    flat_in = int(np.prod(input_shape))
    blocks = set(residual_blocks(widths)) if cfg.residual else set()
    closes_block = {i + 1 for i in blocks}
    pool = cfg.pool == "max"
    norm = cfg.norm == "batch"
    # the scanned stack: hidden layers 1..L-1 when they are identical in shape, stored as one
    # pytree with a leading layer axis (params["stack"]), so that the program holds one copy of
    # the layer and of its optimizer update whatever the depth
    stored = plan.scanned and stack_length(cfg) >= 2
    if stored and norm:
        raise ValueError("a scanned MLP stack does not support model.norm=batch; use train.stack=unrolled")

    def conv_out_dim() -> int:
        h, w = input_shape[0], input_shape[1]
        for _ in channels:
            if pool:
                h, w = h // 2, w // 2
        return h * w * channels[-1]

    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, len(channels) + len(widths) + 1)
        conv, stats, c_in = [], [], input_shape[-1] if channels else 0
        for k, c_out in zip(keys[: len(channels)], channels):
            conv.append(_layer_params(w_init, k, (cfg.kernel, cfg.kernel, c_in, c_out * act.pieces), c_out, act, norm))
            stats.append(_bn_stats(c_out * act.pieces))
            c_in = c_out
        hidden, fan_in = [], conv_out_dim() if channels else flat_in
        for i, (k, width) in enumerate(zip(keys[len(channels) : -1], widths)):
            # the last layer of each residual branch starts at zero, so that every block is the
            # identity at initialization (SkipInit / Fixup); plain He-initialized branches explode
            init_fn = jax.nn.initializers.zeros if i in closes_block else w_init
            hidden.append(_layer_params(init_fn, k, (fan_in, width * act.pieces), width, act, norm))
            stats.append(_bn_stats(width * act.pieces))
            fan_in = width
        out = {"w": out_init(keys[-1], (fan_in, num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
        params = {"conv": conv, "hidden": hidden, "out": out}
        if stored:
            params = stack_params(params)
        return merge_stats(params, stats if norm else None)

    def apply(
        params: Params, x: jax.Array, *, key: Optional[jax.Array] = None, train: bool = False,
        norm_train: Optional[bool] = None,
    ):
        # batch norm follows `train` unless told otherwise (MC dropout: dropout on, running statistics)
        bn_train = train if norm_train is None else norm_train
        n_keys = 1 + len(channels) + len(widths)
        keys = list(jax.random.split(key, n_keys)) if (train and key is not None) else [None] * n_keys
        all_stats = params.get("batch_stats") or [None] * (len(channels) + len(widths))
        h = dropout(x, cfg.input_dropout, keys[0], train)
        pre, post, new_stats = [], [], []
        if channels:
            h = h.reshape((-1,) + tuple(input_shape))
            for block, k, st in zip(params["conv"], keys[1 : 1 + len(channels)], all_stats):
                z, s = batch_norm(conv2d(h, block["w"]) + _shift(block), block, st, bn_train)
                h = act.fn(z, block)
                pre.append(z)
                post.append(h)
                new_stats.append(s)
                if pool:
                    h = max_pool(h)
                h = dropout(h, cfg.dropout, k, train)
            h = h.reshape(h.shape[0], -1)

        def linear(h, layer, st):
            # a dense layer's pre-activation (batch-normalized with `norm: batch`), the loop's and the scan's
            return batch_norm(h @ layer["w"] + _shift(layer), layer, st, bn_train)

        def dense(h, item):
            layer, k, st = item
            z, s = linear(h, layer, st)
            out = act.fn(z, layer)
            return dropout(out, cfg.dropout, k if train and key is not None else None, train), (z, out, s)

        shortcut = None
        hidden_keys, hidden_stats = keys[1 + len(channels) :], all_stats[len(channels) :]
        for i, (layer, k, st) in enumerate(zip(params["hidden"], hidden_keys, hidden_stats)):
            if i in blocks:
                shortcut = h
            z, s = linear(h, layer, st)
            z = _with_shortcut(z, shortcut if i in closes_block else None, act.pieces)
            h = act.fn(z, layer)
            pre.append(z)
            post.append(h)
            new_stats.append(s)
            h = dropout(h, cfg.dropout, k, train)
        if "stack" in params:
            n_stack = len(widths) - 1
            stack_keys = (
                jnp.stack(hidden_keys[1:]) if (train and key is not None) else jnp.zeros((n_stack, 2), jnp.uint32)
            )
            h, (z_L, out_L, _) = jax.lax.scan(
                dense, h, (params["stack"], stack_keys, None), unroll=min(plan.unroll, n_stack)
            )
            pre.extend(z_L[i] for i in range(n_stack))
            post.extend(out_L[i] for i in range(n_stack))
        logits = h @ params["out"]["w"] + params["out"]["b"]
        aux = {"pre": pre, "post": post}
        if norm:
            aux["batch_stats"] = new_stats
        return logits, aux

    return Model(init, apply, act)


def build_resnet(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, plan: StackPlan = StackPlan()
) -> Model:
    """The CIFAR ResNet of He et al. 2016 (section 4.2): a 3x3 conv with 16 channels, three stages
    of `blocks` blocks (two 3x3 convs each) at 16, 32 and 64 channels, stride 2 at the first
    conv of stages 2 and 3, global average pooling and the classifier: 6 * blocks + 2 layers.

    `shortcut: identity` adds each block's input to its second conv's output (option A: at a
    stage change the input is subsampled and zero-padded to the new channels, no parameters);
    `none` is the paper's plain net. With `norm: batch` every conv is followed by batch norm.
    With shortcuts each block starts as the identity: its last batch norm's scale starts at zero
    (or, without batch norm, its second conv's weights). Params: {"conv": [stem, block 1 conv 1, block 1 conv 2, ...],
    "hidden": [], "out", "batch_stats"}. Under a scanned `plan`, blocks 2..n of each stage run
    as one lax.scan.
    """
    if len(input_shape) != 3:
        raise ValueError(f"a resnet needs image inputs (H, W, C); got input shape {input_shape}")
    act = activations.get(cfg)
    norm = cfg.norm == "batch"
    identity = cfg.shortcut == "identity"
    w_init = _initializer(cfg, act)
    out_init = _output_init(num_classes) if cfg.init == "auto" else w_init
    widths_ = (16, 32, 64)
    n = cfg.blocks
    p = act.pieces
    # (stage, block) for every block, in order; convs are 1 (stem) + 2 per block
    layout = [(s, j) for s in range(3) for j in range(n)]

    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, 2 + 2 * len(layout))
        conv = [_layer_params(w_init, keys[0], (3, 3, input_shape[-1], 16 * p), 16, act, norm)]
        c_in = 16
        for b, (s, j) in enumerate(layout):
            c = widths_[s]
            second = jax.nn.initializers.zeros if (identity and not norm) else w_init
            conv.append(_layer_params(w_init, keys[1 + 2 * b], (3, 3, c_in, c * p), c, act, norm))
            conv.append(_layer_params(second, keys[2 + 2 * b], (3, 3, c, c * p), c, act, norm))
            if identity and norm:
                # zero-gamma (Goyal et al. 2017, torchvision's zero_init_residual): the branch's
                # last batch norm starts at scale 0, so every block starts as the identity and
                # the evaluation-mode outputs at initialization do not grow with depth
                conv[-1]["scale"] = jnp.zeros_like(conv[-1]["scale"])
            c_in = c
        out = {"w": out_init(keys[-1], (64, num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
        stats = [_bn_stats(layer["w"].shape[-1]) for layer in conv]
        return merge_stats({"conv": conv, "hidden": [], "out": out}, stats if norm else None)

    def apply(
        params: Params, x: jax.Array, *, key: Optional[jax.Array] = None, train: bool = False,
        norm_train: Optional[bool] = None,
    ):
        # batch norm follows `train` unless told otherwise (MC dropout: dropout on, running statistics)
        bn_train = train if norm_train is None else norm_train
        use_keys = train and key is not None
        # without dropout keys, a placeholder that `dropout` never reads (scan needs an array)
        keys = list(jax.random.split(key, 1 + len(layout))) if use_keys else [jnp.zeros((2,), jnp.uint32)] * (1 + len(layout))

        def block(h: jax.Array, item: tuple, stride: int) -> tuple[jax.Array, tuple]:
            (c1, c2), (s1, s2), k = item
            z1, n1 = batch_norm(conv2d(h, c1["w"], stride) + _shift(c1), c1, s1, bn_train)
            h1 = act.fn(z1, c1)
            z2, n2 = batch_norm(conv2d(h1, c2["w"]) + _shift(c2), c2, s2, bn_train)
            shortcut = None
            if identity:
                shortcut = h[:, ::stride, ::stride, :] if stride > 1 else h
                extra = c2["w"].shape[-1] // p - shortcut.shape[-1]
                if extra > 0:  # option A: zero-padded new channels, no parameters
                    shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, extra)))
            # the instruments read the pre-activation with the shortcut added, as in residual MLPs
            z2 = _with_shortcut(z2, shortcut, p)
            h2 = act.fn(z2, c2)
            h2 = dropout(h2, cfg.dropout, k if use_keys else None, train)
            return h2, ((z1, h1, n1), (z2, h2, n2))

        def same_shape_block(h: jax.Array, item: tuple) -> tuple[jax.Array, tuple]:
            return block(h, item, 1)

        conv = params["conv"]
        stats = params.get("batch_stats") or [None] * len(conv)
        h = dropout(x, cfg.input_dropout, keys[0] if use_keys else None, train).reshape((-1,) + tuple(input_shape))
        z, s = batch_norm(conv2d(h, conv[0]["w"]) + _shift(conv[0]), conv[0], stats[0], bn_train)
        h = act.fn(z, conv[0])
        outs = [(z, h, s)]
        for stage in range(3):
            items = [
                ((conv[1 + 2 * b], conv[2 + 2 * b]), (stats[1 + 2 * b], stats[2 + 2 * b]), keys[1 + b])
                for b in range(stage * n, (stage + 1) * n)
            ]
            h, first = block(h, items[0], 1 if stage == 0 else 2)
            h, rest = run_stack(same_shape_block, h, items[1:], plan)
            for pair in [first, *rest]:
                outs.extend(pair)
        logits = jnp.mean(h, axis=(1, 2)) @ params["out"]["w"] + params["out"]["b"]
        aux = {"pre": [o[0] for o in outs], "post": [o[1] for o in outs]}
        if norm:
            aux["batch_stats"] = [o[2] for o in outs]
        return logits, aux

    return Model(init, apply, act)


ARCHITECTURES: dict[str, Callable[..., Model]] = {
    "mlp": build_feedforward,
    "cnn": build_feedforward,
    "resnet": build_resnet,
}


def build(
    cfg: ModelConfig, input_shape: tuple[int, ...] | int, num_classes: int, plan: Optional[StackPlan] = None
) -> Model:
    """The Model named by `cfg.arch` for inputs of `input_shape` ((H, W, C) images, or (D,)) and
    `num_classes` outputs. Inputs arrive flattened; a CNN reshapes them to `input_shape`.
    `plan` says how stacks of identical layers compile (default: unrolled)."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    return ARCHITECTURES[cfg.arch](cfg, shape, num_classes, plan or StackPlan())


def param_count(params: Params) -> int:
    """Trainable parameters (batch norm's running statistics are not counted)."""
    trainable, _ = split_stats(params)
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(trainable)))

"""The explorer: one self-contained HTML page to walk a model's latent space and scrub training.

:func:`explorer_page` writes, for any model of the contract with a decoder and a latent space of
two or more dimensions, a page that works offline (no server, nothing fetched; every byte inlined):

* a **latent canvas**: the codes of held-out data (or draws of μ, for a model without an encoder)
  scattered on the plane, coloured by label (the legend under it gives each colour's labels),
  over the regions holding μ's densest 50%, 90% and 99% of mass on that plane
  (:mod:`pushforward.explore.mass`): where μ puts its mass against where the codes are;
  the pointer's z is decoded *in the page* and drawn beside it (an image, the point g(z) on the
  data plane, or the d values as bars). Two clicks show the interpolation between two codes.
  For k > 2 two sliders choose the plane, spanned by two principal directions of the codes.
* an **epoch scrubber** when the run kept sample snapshots (``snapshot_every``): g#μ over training.
* a **t scrubber** for a model with motion (:attr:`~pushforward.contract.Model.has_motion`):
  particles carried from μ to the data.

The decoder runs in JavaScript from its weights when the model writes it as a portable program
(:meth:`~pushforward.contract.Model.decoder_layers`: linear maps and elementwise functions,
evaluated exactly as PyTorch does, weights in float32, or float16 for a large decoder). Otherwise
(convolutions, flows) the page holds a precomputed grid of :meth:`~pushforward.contract.Model.
decode` over the plane (up to 64 × 64 codes) and the pointer snaps to the nearest cell; the plane
is then the first two principal directions. Nothing here asks what kind of model it holds: it
reads the contract's declarations.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pushforward.core import ConfigError, Model, a_or_an, atomic_write_bytes
from pushforward.data import datasets
from pushforward.explore.mass import grid_cells, mass_planes, prior_mass
from pushforward.nets import DecoderLayer
from pushforward.pages import Page
from pushforward.train import to_model_device

__all__ = [
    "JS_ACTIVATIONS",
    "MAX_FRAMES",
    "MAX_GRID_VALUES",
    "PALETTE",
    "Explorer",
    "explore_run",
    "explorer_page",
    "legend",
]

JS_ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "leaky_relu_0.2",
    "elu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "identity",
)
"""The elementwise functions the page evaluates (PyTorch's defaults: leaky slope 0.01, or 0.2 for
DCGAN's critic; ELU α = 1,
exact erf GELU); a decoder program using another falls back to the precomputed grid."""

FLOAT32_MAX_PARAMS = 2**18
"""A decoder program with at most this many numbers is embedded in float32; a larger one in
float16 (a 784-512-2 decoder: 0.4 M numbers, 1.1 MB of base64)."""

MAX_GRID_VALUES = 2**20
"""The most decoded numbers a precomputed grid holds (side² · d): 64 × 64 codes for d ≤ 256,
fewer for larger d (36 × 36 for 28 × 28 images), about 2.8 MB of base64 in float16."""

MAX_GRID_SIDE = 64
MAX_FRAMES = 30
"""Snapshots beyond this many are thinned evenly (the first and last kept)."""
FRAME_IMAGES = 64  # images per snapshot or motion frame: an 8 × 8 grid
FRAME_POINTS = 1000  # points per snapshot or motion frame
MOTION_TIMES = 21

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
"""The colours of the codes on the latent canvas: label v is drawn in colour v mod 10
(matplotlib's tab10, as the gallery's scatter plots)."""


@dataclass
class Explorer:
    """What the page shows, gathered from a model and data, ready to be written as HTML.

    ``codes`` (n, k) are the points on the latent canvas (``codes_label`` says what they are),
    ``labels`` (n,) colour them; ``data`` (m, d) is drawn under decoded points for 2-D data;
    ``snapshots`` are (epochs (S,), samples (S, r, d)); ``motion`` (times (T,), particles
    (T, r, d)).
    """

    model: Model
    title: str
    codes: Tensor
    codes_label: str
    labels: Tensor | None = None
    data: Tensor | None = None
    image_shape: tuple[int, int] | None = None
    snapshots: tuple[list[int], Tensor] | None = None
    motion: tuple[Tensor, Tensor] | None = None
    precision: str = "auto"
    seed: int = 0

    @property
    def view(self) -> str:
        """How a decoded point is drawn: ``image``, ``points`` (on the 2-D data plane), or
        ``vector`` (its d values as bars)."""
        if self.image_shape is not None:
            return "image"
        return "points" if self.model.dim == 2 else "vector"

    def payload(self) -> dict[str, Any]:
        """Return everything the page's script reads, as JSON-able values (arrays base64)."""
        model, k = self.model, self.model.latent
        center, axes = _principal_plane(self.codes)
        layers = _portable(model.decoder_layers())
        payload: dict[str, Any] = {
            "title": self.title,
            "latent": k,
            "dim": model.dim,
            "view": self.view,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "codes": {"label": self.codes_label, "z": _array(self.codes)},
            "labels": self.labels.tolist() if self.labels is not None else None,
            "palette": list(PALETTE),
            "plane": {"center": _array(center), "axes": _array(axes)},
            "data": _array(self.data[:, :2]) if self.data is not None else None,
        }
        if layers is not None:
            payload["decoder"] = {"kind": "layers", "layers": self._layers(layers)}
        else:
            payload["decoder"] = self._grid(center, axes)
        payload["mass"] = self._mass(center, axes, sliders=k > 2 and layers is not None)
        if self.snapshots is not None and self.view != "vector":
            epochs, samples = _thin(*self.snapshots)
            payload["snapshots"] = {"epochs": epochs, "samples": self._frames(samples)}
        if self.motion is not None and self.view != "vector":
            times, particles = self.motion
            payload["motion"] = {"times": times.tolist(), "samples": self._frames(particles)}
        return payload

    def _layers(self, layers: list[DecoderLayer]) -> list[dict[str, Any]]:
        size = sum(t.numel() for layer in layers for t in layer[1:] if isinstance(t, Tensor))
        dtype = {"float16": "f16", "float32": "f32"}.get(self.precision)
        if dtype is None:
            dtype = "f32" if size <= FLOAT32_MAX_PARAMS else "f16"
        out: list[dict[str, Any]] = []
        for layer in layers:
            if layer[0] == "linear":
                out.append({"op": "linear", "W": _array(layer[1], dtype),
                            "b": _array(layer[2], dtype)})  # fmt: skip
            elif layer[0] == "affine":
                out.append({"op": "affine", "s": _array(layer[1]), "c": _array(layer[2])})
            else:
                out.append({"op": "activation", "name": layer[1]})
        return out

    def _grid(self, center: Tensor, axes: Tensor) -> dict[str, Any]:
        """The decodes of a side × side grid of cell centres on the plane of the first two
        principal directions (cell (ix, iy) at row iy·side + ix, iy along the second)."""
        d = self.model.dim
        side = max(2, min(MAX_GRID_SIDE, math.isqrt(MAX_GRID_VALUES // d)))
        lo, hi = _extent(_project(self.codes, center, axes[:2]))
        a, b = grid_cells(lo, hi, side)  # (side²,) each
        z = center + a.float()[:, None] * axes[0] + b.float()[:, None] * axes[1]  # (side², k)
        with torch.no_grad():
            x = self.model.decode(to_model_device(z.float(), self.model)).float().cpu()
        return {"kind": "grid", "side": side, "lo": lo, "hi": hi, "values": _array(x, "f16")}

    def _mass(self, center: Tensor, axes: Tensor, *, sliders: bool) -> dict[str, Any] | None:
        """μ's density on each plane the canvas can show, over the box the page draws it in
        (:mod:`pushforward.explore.mass`); None for a model without a latent density."""
        boxes = {(i, j): _extent(_project(self.codes, center, axes[[i, j]]))
                 for i, j in mass_planes(self.model.latent, sliders)}  # fmt: skip
        gen = torch.Generator().manual_seed(self.seed)
        mass = prior_mass(self.model.latent_measure, center, axes, boxes, generator=gen)
        if mass is None:
            return None
        return {**mass, "boxes": list(boxes.values()), "values": _array(mass["values"], "u8")}

    def _frames(self, samples: Tensor) -> dict[str, Any]:
        """Frames (S, r, d) as the page draws them: the first 64 images (bytes) or 1,000 points."""
        if self.view == "image":
            return _array(samples[:, :FRAME_IMAGES].clamp(0, 1), "u8")
        return _array(samples[:, :FRAME_POINTS, :2])

    def to_html(self) -> str:
        """Return the page: one HTML document with its data, style and script inlined."""
        data = json.dumps(self.payload(), separators=(",", ":")).replace("</", "<\\/")
        body = [
            _BODY.replace("<!--legend-->", legend(self.labels)),
            f'<script type="application/json" id="pf-data">{data}</script>',
            f"<script>{_script()}</script>",
        ]
        return Page(self.title, css=_CSS, body=body).to_html()


def legend(labels: Tensor | None) -> str:
    """Return the latent canvas's legend (HTML): each colour of :data:`PALETTE` in use and the
    labels (n,) drawn in it; empty when the codes have no labels."""
    if labels is None or labels.numel() == 0:
        return ""
    by_colour: dict[int, list[int]] = {}
    for v in sorted({int(v) for v in labels.tolist()}):
        by_colour.setdefault(v % len(PALETTE), []).append(v)
    keys = [
        f'<span class="key"><i style="background:{PALETTE[c]}"></i>'
        f"{html.escape(', '.join(str(v) for v in values))}</span>"
        for c, values in sorted(by_colour.items(), key=lambda item: item[1][0])
    ]
    return f'<div class="legend" id="pf-legend">label: {" ".join(keys)}</div>'


def _portable(layers: list[DecoderLayer] | None) -> list[DecoderLayer] | None:
    """Return the program when the page can run every step of it, else None (use the grid)."""
    if layers is None:
        return None
    for layer in layers:
        if layer[0] == "activation" and layer[1] not in JS_ACTIVATIONS:
            return None
        if layer[0] not in ("linear", "activation", "affine"):
            return None
    return layers


def _array(t: Tensor, dtype: str = "f32") -> dict[str, Any]:
    """Return a tensor as {dtype, shape, b64}: little-endian float32 or float16, or bytes
    round(255·v) of values v in [0, 1] (``u8``)."""
    a = t.detach().cpu().double().numpy()
    if dtype == "u8":
        raw = np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8).tobytes()
    else:
        raw = a.astype({"f32": "<f4", "f16": "<f2"}[dtype]).tobytes()
    return {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(raw).decode("ascii")}


def _principal_plane(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Return the centre c (k,) and the directions (k, k) of the canvas: for k = 2 the latent
    axes themselves about 0, so the canvas shows z; for k > 2 the codes' mean and principal
    directions (rows, by decreasing variance)."""
    n, k = codes.shape
    if k == 2 or n < k:  # too few codes to find k directions: the latent axes
        return torch.zeros(k), torch.eye(k)
    x = codes.double()
    mean = x.mean(0)  # (k,)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)  # (k, k), rows by singular value
    # each direction's largest-|value| entry positive (scikit-learn's svd_flip), so the same
    # codes always give the same plane
    pivot = vh.abs().argmax(dim=1, keepdim=True)
    return mean.float(), (vh * torch.sign(vh.gather(1, pivot))).float()


def _project(codes: Tensor, center: Tensor, axes: Tensor) -> Tensor:
    """Return the coordinates (n, 2) of codes (n, k) on the plane of two directions (2, k)."""
    return (codes.float() - center) @ axes.T


def _extent(p: Tensor) -> tuple[list[float], list[float]]:
    """Return the low and high corner of the box around points p (n, 2), padded by 5% a side
    (the page computes the same box when the plane changes)."""
    if p.shape[0] == 0:
        return [-3.0, -3.0], [3.0, 3.0]
    lo, hi = p.min(0).values, p.max(0).values
    pad = torch.where(hi > lo, 0.05 * (hi - lo), torch.ones_like(lo))
    return (lo - pad).tolist(), (hi + pad).tolist()


def _thin(epochs: list[int], samples: Tensor) -> tuple[list[int], Tensor]:
    """Keep at most :data:`MAX_FRAMES` snapshots, evenly spaced, the first and last among them."""
    s = len(epochs)
    if s <= MAX_FRAMES:
        return list(epochs), samples
    keep = sorted({round(i * (s - 1) / (MAX_FRAMES - 1)) for i in range(MAX_FRAMES)})
    return [epochs[i] for i in keep], samples[keep]


def _check(model: Model, where: str) -> None:
    """Refuse a model the explorer cannot draw, naming what it needs."""
    if not model.has_decoder:
        raise ConfigError(
            f"explore needs a decoder g: z ↦ x, but {where} holds {a_or_an(type(model).__name__)}, "
            "which has none"
        )
    if model.latent < 2:
        raise ConfigError(
            f"explore needs a latent space of at least 2 dimensions to draw on a plane, but "
            f"{where} holds {a_or_an(type(model).__name__)} with latent k = {model.latent}; "
            "fit one with a 2-D latent (e.g. --latent 2)"
        )


def explorer_page(
    model: Model,
    ds: datasets.Dataset,
    *,
    title: str | None = None,
    points: int = 2000,
    snapshots: tuple[list[int], Tensor] | None = None,
    seed: int = 0,
    precision: str = "auto",
    where: str = "the model",
) -> str:
    """Return the explorer page (HTML) of ``model`` over the held-out data ``ds`` (n, d).

    The latent canvas holds the codes of ``ds``'s first ``points`` rows (draws of μ for a model
    without an encoder); ``snapshots`` (epochs (S,), samples (S, r, d)) add the epoch scrubber; a
    model with motion adds the t scrubber, its particles drawn from a generator seeded ``seed``.
    ``precision`` is how decoder weights are embedded: ``auto`` (float32 up to 2¹⁸ numbers, else
    float16), ``float16`` or ``float32``. ``where`` names the model in messages.
    """
    if precision not in ("auto", "float16", "float32"):
        raise ConfigError(f"precision {precision!r} is not allowed; use auto, float16 or float32")
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ConfigError(f"points = {points!r} is not allowed; use an integer ≥ 1")
    _check(model, where)
    if ds.dim != model.dim:
        raise ConfigError(
            f"data {ds.name!r} has dimension {ds.dim}, but the model expects {model.dim}"
        )
    model.eval()
    x = ds.x[:points]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if model.has_encoder:
            codes = model.encode(to_model_device(x, model)).float().cpu()
            label = f"{model.code_label} of {ds.name}"
            labels = ds.labels[:points] if ds.labels is not None else None
        elif model.latent_measure is not None:
            codes = model.latent_measure.sample(points, generator=gen).cpu()
            label, labels = "draws of μ", None
        else:
            codes, label, labels = torch.zeros(0, model.latent), "", None
    motion = None
    if model.has_motion:
        times = torch.linspace(0, 1, MOTION_TIMES)
        rows = FRAME_IMAGES if ds.image_shape is not None else FRAME_POINTS
        with torch.no_grad():
            particles = model.motion(
                rows, to_model_device(times, model), generator=torch.Generator().manual_seed(seed)
            )
        motion = (times, particles.float().cpu())
    explorer = Explorer(
        model=model,
        title=title or f"pushforward explore: {a_or_an(type(model).__name__)} on {ds.name}",
        codes=codes.float(),
        codes_label=label,
        labels=labels,
        data=x if ds.dim == 2 and ds.image_shape is None else None,
        image_shape=ds.image_shape,
        snapshots=snapshots,
        motion=motion,
        precision=precision,
        seed=seed,
    )
    return explorer.to_html()


def _held_out(rows: str | None) -> str | None:
    """Return the rows a run did not train on when its ``rows`` is one open slice (':B' → 'B:',
    'A:' → ':A'), else the run's own rows."""
    if rows is None or rows.count(":") != 1:
        return rows
    start, stop = (p.strip() for p in rows.split(":"))
    if start and not stop:
        return f":{start}"
    if stop and not start:
        return f"{stop}:"
    return rows


def explore_run(
    folder: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    rows: str | None = None,
    n: int | None = None,
    points: int = 2000,
    seed: int | None = None,
    precision: str = "auto",
    device: str = "auto",
) -> Path:
    """Write the explorer page of the run in ``folder`` to ``out`` and return its path; the
    model computes the page's codes, grid and particles on ``device``.

    The data default to the run's own held out: the rows it did not train on when it trained on
    one slice (``--rows :8000`` → ``8000:``), fresh draws (seed + 1) of sampled data (mixtures,
    moons); ``data``, ``rows`` and ``n`` choose others. The run's snapshots, when it kept any,
    add the epoch scrubber.
    """
    from pushforward.runs import load_model, load_run_config
    from pushforward.train import read_snapshots

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"out {str(out)!r}: the explorer is a web page; use a .html file")
    model = load_model(folder, device=device)
    where = repr(str(folder))
    _check(model, where)
    run = load_run_config(folder).get("run", {})
    train_seed = int(run.get("train", {}).get("seed", 0))
    own = data is None
    spec = run.get("data") if own else data
    if spec is None:
        raise ConfigError(f"{where} does not name its data; give --data")
    gen = torch.Generator().manual_seed(train_seed + 1 if seed is None else seed)
    ds = datasets.load_data(spec, n=n if n is not None else run.get("n"), generator=gen)
    chosen = rows if rows is not None else (_held_out(run.get("rows")) if own else None)
    try:
        ds = datasets.select_rows(ds, chosen)
    except ConfigError:
        if rows is not None:
            raise
        ds = datasets.select_rows(ds, run.get("rows"))  # nothing was held out
    page = explorer_page(
        model, ds, points=points, snapshots=read_snapshots(folder), precision=precision,
        title=f"pushforward explore: {Path(folder).name}", seed=0 if seed is None else seed,
        where=where,
    )  # fmt: skip
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


_CSS = """
body{margin:1em auto}h1{font-size:1.3em}h2{font-size:1.1em;margin:1.2em 0 .4em}
.row{display:flex;flex-wrap:wrap;gap:1em}
canvas{border:1px solid #ccc;image-rendering:pixelated;touch-action:none}
figcaption,.note{font-size:.85em;color:#555;max-width:520px}#pf-latent{cursor:crosshair}
label{font-size:.9em;margin-right:1em}input[type=range]{vertical-align:middle;width:260px}
.legend{font-size:.85em;color:#555;max-width:420px}.key{white-space:nowrap;margin-right:.6em}
.key i{display:inline-block;width:.8em;height:.8em;margin-right:.25em;vertical-align:-.05em}
"""

_BODY = """<p class="note" id="pf-note"></p>
<div class="row">
<figure><canvas id="pf-latent" width="420" height="420"></canvas>
<figcaption id="pf-latent-cap"></figcaption><!--legend--></figure>
<figure><canvas id="pf-out" width="420" height="420"></canvas>
<figcaption id="pf-out-cap"></figcaption></figure>
</div>
<div id="pf-planes" hidden><label>first direction <input type="range" id="pf-dir-a" min="1"
step="1"> <span id="pf-dir-a-v"></span></label><label>second direction <input type="range"
id="pf-dir-b" min="1" step="1"> <span id="pf-dir-b-v"></span></label></div>
<figure id="pf-interp-fig" hidden><canvas id="pf-interp" width="860" height="86"></canvas>
<figcaption>g along the segment between the two clicked codes</figcaption></figure>
<div class="row">
<section id="pf-epochs" hidden><h2>g#μ over training</h2>
<label><input type="range" id="pf-epoch" min="0" step="1"> <span id="pf-epoch-v"></span></label>
<div><canvas id="pf-epoch-canvas" width="420" height="420"></canvas></div></section>
<section id="pf-motion" hidden><h2>Particles carried from μ (t = 0) to the data (t = 1)</h2>
<label><input type="range" id="pf-time" min="0" step="1"> <span id="pf-time-v"></span></label>
<div><canvas id="pf-time-canvas" width="420" height="420"></canvas></div></section>
</div>"""


def _script() -> str:
    """Return the page's script (explore.js, shipped beside this module)."""
    return resources.files("pushforward.explore").joinpath("explore.js").read_text(encoding="utf-8")

"""The explorer: one self-contained HTML page to walk a model's latent space and scrub training.

:func:`explorer_page` writes, for any model of the contract with a decoder and a latent space of
two or more dimensions, a page that works offline (no server, nothing fetched; every byte inlined):

* a **latent canvas**: the codes of held-out data (or draws of μ, for a model without an encoder)
  scattered on the plane, coloured by label; the pointer's z is decoded *in the page* and drawn
  beside it (an image, the point g(z) on the data plane, or the d values as bars). Two clicks
  show the interpolation between two codes. For k > 2 two sliders choose the plane, spanned by
  two principal directions of the codes.
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pushforward import datasets
from pushforward.checkpoint import atomic_write_bytes
from pushforward.contract import Model
from pushforward.errors import ConfigError
from pushforward.nets import ACTIVATIONS, DecoderLayer

__all__ = [
    "JS_ACTIVATIONS",
    "MAX_FRAMES",
    "MAX_GRID_VALUES",
    "Explorer",
    "explore_run",
    "explorer_page",
]

JS_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "identity")
"""The elementwise functions the page evaluates (PyTorch's defaults: leaky slope 0.01, ELU α = 1,
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
            "plane": {"center": _array(center), "axes": _array(axes)},
            "data": _array(self.data[:, :2]) if self.data is not None else None,
        }
        if layers is not None:
            payload["decoder"] = {"kind": "layers", "layers": self._layers(layers)}
        else:
            payload["decoder"] = self._grid(center, axes)
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
        cells = [lo[i] + (torch.arange(side) + 0.5) * (hi[i] - lo[i]) / side for i in (0, 1)]
        b, a = torch.meshgrid(cells[1], cells[0], indexing="ij")  # (side, side) each
        z = center + a.reshape(-1, 1) * axes[0] + b.reshape(-1, 1) * axes[1]  # (side², k)
        with torch.no_grad():
            x = self.model.decode(z.float()).float()  # (side², d)
        return {"kind": "grid", "side": side, "lo": lo, "hi": hi, "values": _array(x, "f16")}

    def _frames(self, samples: Tensor) -> dict[str, Any]:
        """Frames (S, r, d) as the page draws them: the first 64 images (bytes) or 1,000 points."""
        if self.view == "image":
            return _array(samples[:, :FRAME_IMAGES].clamp(0, 1), "u8")
        return _array(samples[:, :FRAME_POINTS, :2])

    def to_html(self) -> str:
        """Return the page: one HTML document with its data, style and script inlined."""
        data = json.dumps(self.payload(), separators=(",", ":")).replace("</", "<\\/")
        title = html.escape(self.title)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}'
            f"</title><style>{_CSS}</style></head><body>\n<h1>{title}</h1>\n{_BODY}\n"
            f'<script type="application/json" id="pf-data">{data}</script>\n'
            f"<script>{_JS}</script>\n</body></html>\n"
        )


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
    k = codes.shape[1]
    if k == 2:
        return torch.zeros(2), torch.eye(2)
    z = codes.double()
    center = z.mean(0)
    _, _, vh = torch.linalg.svd(z - center, full_matrices=True)  # (k, k) when n ≥ k
    if vh.shape[0] < k:
        vh = torch.linalg.qr(torch.cat([vh, torch.eye(k, dtype=z.dtype)]).T).Q.T[:k]
    return center.float(), vh.float()


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
            f"explore needs a decoder g: z ↦ x, but {where} holds a {type(model).__name__}, "
            "which has none"
        )
    if model.latent < 2:
        raise ConfigError(
            f"explore needs a latent space of at least 2 dimensions to draw on a plane, but "
            f"{where} holds a {type(model).__name__} with latent k = {model.latent}; fit one "
            "with a 2-D latent (e.g. --latent 2)"
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
        raise ConfigError(f"data {ds.name!r} has dimension {ds.dim}, but the model expects {model.dim}")
    model.eval()
    x = ds.x[:points]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if model.has_encoder:
            codes, label = model.encode(x).float(), f"{model.code_label} of {ds.name}"
            labels = ds.labels[:points] if ds.labels is not None else None
        elif model.latent_measure is not None:
            codes, label, labels = model.latent_measure.sample(points, generator=gen), "draws of μ", None
        else:
            codes, label, labels = torch.zeros(0, model.latent), "", None
    motion = None
    if model.has_motion:
        times = torch.linspace(0, 1, MOTION_TIMES)
        rows = FRAME_IMAGES if ds.image_shape is not None else FRAME_POINTS
        with torch.no_grad():
            motion = (times, model.motion(rows, times, generator=gen).float())
    explorer = Explorer(
        model=model,
        title=title or f"pushforward explore: a {type(model).__name__} on {ds.name}",
        codes=codes.float(),
        codes_label=label,
        labels=labels,
        data=x if ds.dim == 2 and ds.image_shape is None else None,
        image_shape=ds.image_shape,
        snapshots=snapshots,
        motion=motion,
        precision=precision,
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
) -> Path:
    """Write the explorer page of the run in ``folder`` to ``out`` and return its path.

    The data default to the run's own held out: the rows it did not train on when it trained on
    one slice (``--rows :8000`` → ``8000:``), fresh draws (seed + 1) of sampled data (mixtures,
    moons); ``data``, ``rows`` and ``n`` choose others. The run's snapshots, when it kept any,
    add the epoch scrubber.
    """
    from pushforward.reporters import read_snapshots
    from pushforward.runs import load_model, load_run_config

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"out {str(out)!r}: the explorer is a web page; use a .html file")
    model = load_model(folder)
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
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin:1.2em 0 .4em}.row{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}canvas{border:1px solid #ccc;image-rendering:pixelated;touch-action:none}
figcaption,.note{font-size:.85em;color:#555;max-width:520px}#latent{cursor:crosshair}
label{font-size:.9em;margin-right:1em}input[type=range]{vertical-align:middle;width:260px}
"""

_BODY = """<p class="note" id="pf-note"></p>
<div class="row">
<figure><canvas id="pf-latent" width="420" height="420"></canvas>
<figcaption id="pf-latent-cap"></figcaption></figure>
<figure><canvas id="pf-out" width="420" height="420"></canvas>
<figcaption id="pf-out-cap"></figcaption></figure>
</div>
<div id="pf-planes" hidden><label>first direction <input type="range" id="pf-dir-a" min="1"
step="1"> <span id="pf-dir-a-v"></span></label><label>second direction <input type="range"
id="pf-dir-b" min="1" step="1"> <span id="pf-dir-b-v"></span></label></div>
<figure id="pf-interp-fig" hidden><canvas id="pf-interp" width="860" height="86"></canvas>
<figcaption>g along the segment between the two clicked codes</figcaption></figure>
<section id="pf-epochs" hidden><h2>g#μ over training</h2>
<label><input type="range" id="pf-epoch" min="0" step="1"> <span id="pf-epoch-v"></span></label>
<div><canvas id="pf-epoch-canvas" width="420" height="420"></canvas></div></section>
<section id="pf-motion" hidden><h2>Particles carried from μ (t = 0) to the data (t = 1)</h2>
<label><input type="range" id="pf-time" min="0" step="1"> <span id="pf-time-v"></span></label>
<div><canvas id="pf-time-canvas" width="420" height="420"></canvas></div></section>"""

_JS = r"""
(function () {
"use strict";
const P = JSON.parse(document.getElementById("pf-data").textContent);
const $ = (id) => document.getElementById(id);
const F16 = new Float32Array(65536);
for (let h = 0; h < 65536; h++) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
  F16[h] = e === 0 ? s * f * 5.960464477539063e-8
    : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * Math.pow(2, e - 15);
}
function arr(a) {  // {dtype, shape, b64} -> Float32Array (little-endian data)
  const bin = atob(a.b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const m = a.shape.reduce((x, y) => x * y, 1), out = new Float32Array(m);
  const dv = new DataView(bytes.buffer);
  if (a.dtype === "f32") for (let i = 0; i < m; i++) out[i] = dv.getFloat32(4 * i, true);
  else if (a.dtype === "f16") for (let i = 0; i < m; i++) out[i] = F16[dv.getUint16(2 * i, true)];
  else for (let i = 0; i < m; i++) out[i] = bytes[i] / 255;
  return out;
}
function erfc(x) {  // Numerical Recipes' erfc, relative error < 1.2e-7
  const z = Math.abs(x), t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
    + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
    + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2 - r;
}
const ACT = {  // PyTorch's defaults
  relu: (v) => (v > 0 ? v : 0), leaky_relu: (v) => (v > 0 ? v : 0.01 * v),
  elu: (v) => (v > 0 ? v : Math.expm1(v)), gelu: (v) => 0.5 * v * erfc(-v / Math.SQRT2),
  silu: (v) => v / (1 + Math.exp(-v)), tanh: Math.tanh,
  sigmoid: (v) => 1 / (1 + Math.exp(-v)), identity: (v) => v,
};
const k = P.latent, d = P.dim, view = P.view;
const C = arr(P.plane.center), AX = arr(P.plane.axes), Z = arr(P.codes.z);
const nCodes = P.codes.z.shape[0];
const grid = P.decoder.kind === "grid" ? P.decoder : null;
const gridValues = grid ? arr(grid.values) : null;
const layers = grid ? null : P.decoder.layers.map((l) => l.op === "linear"
  ? { op: l.op, W: arr(l.W), b: arr(l.b), rows: l.W.shape[0], cols: l.W.shape[1] }
  : l.op === "affine" ? { op: l.op, s: arr(l.s), c: arr(l.c) } : { op: l.op, f: ACT[l.name] });
let plane = [0, 1], ext = null, clicks = [];

function decode(z) {  // z: k numbers -> d numbers
  if (grid) {
    const ab = project(z), S = grid.side, cell = [0, 1].map((i) => Math.min(S - 1, Math.max(0,
      Math.floor((ab[i] - grid.lo[i]) / (grid.hi[i] - grid.lo[i]) * S))));
    return gridValues.slice((cell[1] * S + cell[0]) * d, (cell[1] * S + cell[0] + 1) * d);
  }
  let h = Float64Array.from(z);
  for (const l of layers) {
    if (l.op === "linear") {
      const o = new Float64Array(l.rows);
      for (let i = 0; i < l.rows; i++) {
        let s = l.b[i];
        const r = i * l.cols;
        for (let j = 0; j < l.cols; j++) s += l.W[r + j] * h[j];
        o[i] = s;
      }
      h = o;
    } else if (l.op === "affine") {
      for (let i = 0; i < h.length; i++) h[i] = l.c[i] + l.s[i] * h[i];
    } else {
      for (let i = 0; i < h.length; i++) h[i] = l.f(h[i]);
    }
  }
  return h;
}
function project(z) {
  return plane.map((p) => { let s = 0; for (let j = 0; j < k; j++) s += (z[j] - C[j]) * AX[p * k + j]; return s; });
}
function toZ(a, b) {
  const z = new Float64Array(k);
  for (let j = 0; j < k; j++) z[j] = C[j] + a * AX[plane[0] * k + j] + b * AX[plane[1] * k + j];
  return z;
}
function snap(a, b) {  // the centre of the grid cell holding (a, b)
  if (!grid) return [a, b];
  const S = grid.side;
  return [a, b].map((v, i) => {
    const w = (grid.hi[i] - grid.lo[i]) / S;
    const c = Math.min(S - 1, Math.max(0, Math.floor((v - grid.lo[i]) / w)));
    return grid.lo[i] + (c + 0.5) * w;
  });
}
function extent() {
  if (grid) return { lo: grid.lo, hi: grid.hi };
  if (nCodes === 0) return { lo: [-3, -3], hi: [3, 3] };
  const lo = [Infinity, Infinity], hi = [-Infinity, -Infinity];
  for (let n = 0; n < nCodes; n++) {
    const ab = project(Z.subarray(n * k, n * k + k));
    for (let i = 0; i < 2; i++) { lo[i] = Math.min(lo[i], ab[i]); hi[i] = Math.max(hi[i], ab[i]); }
  }
  for (let i = 0; i < 2; i++) {
    const pad = hi[i] > lo[i] ? 0.05 * (hi[i] - lo[i]) : 1;
    lo[i] -= pad; hi[i] += pad;
  }
  return { lo, hi };
}
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const latent = $("pf-latent"), lctx = latent.getContext("2d");
const out = $("pf-out"), octx = out.getContext("2d");
const W = latent.width, H = latent.height;
function toPx(a, b) {
  return [(a - ext.lo[0]) / (ext.hi[0] - ext.lo[0]) * W, (ext.hi[1] - b) / (ext.hi[1] - ext.lo[1]) * H];
}
function fromPx(x, y) {
  return [ext.lo[0] + x / W * (ext.hi[0] - ext.lo[0]), ext.hi[1] - y / H * (ext.hi[1] - ext.lo[1])];
}
let base = null;
function drawCodes() {
  ext = extent();
  const c = document.createElement("canvas");
  c.width = W; c.height = H;
  const g = c.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, W, H);
  for (let n = 0; n < nCodes; n++) {
    const ab = project(Z.subarray(n * k, n * k + k)), px = toPx(ab[0], ab[1]);
    g.fillStyle = P.labels ? COLORS[((P.labels[n] % 10) + 10) % 10] : "#4477aa";
    g.globalAlpha = 0.6; g.fillRect(px[0] - 1.5, px[1] - 1.5, 3, 3);
  }
  base = c;
  const dirs = k > 2 ? ` (principal directions ${plane[0] + 1} and ${plane[1] + 1} of the codes)` : "";
  $("pf-latent-cap").textContent = `${P.codes.label || "the latent plane"}${dirs}; `
    + "move the pointer to decode z, click two points to interpolate"
    + (grid ? `; the decoder is a precomputed ${grid.side} × ${grid.side} grid` : "");
  drawLatent(null);
}
function drawLatent(px) {
  lctx.drawImage(base, 0, 0);
  lctx.strokeStyle = "#000"; lctx.fillStyle = "#000";
  const marks = clicks.map((z) => { const ab = project(z); return toPx(ab[0], ab[1]); });
  if (marks.length === 2) {
    lctx.beginPath(); lctx.moveTo(marks[0][0], marks[0][1]); lctx.lineTo(marks[1][0], marks[1][1]);
    lctx.stroke();
  }
  for (const m of marks) lctx.fillRect(m[0] - 3, m[1] - 3, 6, 6);
  if (px) { lctx.beginPath(); lctx.arc(px[0], px[1], 5, 0, 2 * Math.PI); lctx.stroke(); }
}
// the data plane for 2-D data: its box holds the data
const DATA = P.data ? arr(P.data) : null;
const dataExt = (() => {
  if (!DATA) return null;
  const lo = [Infinity, Infinity], hi = [-Infinity, -Infinity];
  for (let n = 0; n < DATA.length / 2; n++) for (let i = 0; i < 2; i++) {
    lo[i] = Math.min(lo[i], DATA[2 * n + i]); hi[i] = Math.max(hi[i], DATA[2 * n + i]);
  }
  const pad = Math.max(hi[0] - lo[0], hi[1] - lo[1]) * 0.1 || 1;
  return { lo: [lo[0] - pad, lo[1] - pad], hi: [hi[0] + pad, hi[1] + pad] };
})();
function dataPx(canvas, x, y) {
  return [(x - dataExt.lo[0]) / (dataExt.hi[0] - dataExt.lo[0]) * canvas.width,
    (dataExt.hi[1] - y) / (dataExt.hi[1] - dataExt.lo[1]) * canvas.height];
}
function drawData(ctx) {
  const c = ctx.canvas;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  if (!DATA) return;
  ctx.fillStyle = "#bbb";
  for (let n = 0; n < DATA.length / 2; n++) {
    const p = dataPx(c, DATA[2 * n], DATA[2 * n + 1]);
    ctx.fillRect(p[0] - 1, p[1] - 1, 2, 2);
  }
}
function drawImage(ctx, x, off, dx, dy, size) {  // one h x w image of x[off..] in a size box
  const [h, w] = P.image_shape, im = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const v = Math.round(255 * Math.min(1, Math.max(0, x[off + i])));
    im.data[4 * i] = im.data[4 * i + 1] = im.data[4 * i + 2] = 255 - v; im.data[4 * i + 3] = 255;
  }
  const t = document.createElement("canvas");
  t.width = w; t.height = h; t.getContext("2d").putImageData(im, 0, 0);
  ctx.imageSmoothingEnabled = false; ctx.drawImage(t, dx, dy, size, size * h / w);
}
function drawBars(ctx, x, dx, dy, w, h) {
  let m = 0;
  for (const v of x) m = Math.max(m, Math.abs(v));
  m = m || 1;
  const bw = w / x.length;
  ctx.fillStyle = "#4477aa";
  for (let i = 0; i < x.length; i++) {
    const v = x[i] / m * h / 2;
    ctx.fillRect(dx + i * bw, dy + h / 2 - Math.max(v, 0), Math.max(bw - 1, 1), Math.abs(v));
  }
}
let path = null;  // decoded points along the clicked segment (2-D data)
function drawOut(x) {
  if (view === "image") {
    octx.fillStyle = "#fff"; octx.fillRect(0, 0, out.width, out.height);
    drawImage(octx, x, 0, 0, 0, out.width);
  } else if (view === "points") {
    drawData(octx);
    if (path) {
      octx.strokeStyle = "#e08000"; octx.lineWidth = 2; octx.beginPath();
      path.forEach((q, i) => { const p = dataPx(out, q[0], q[1]); i ? octx.lineTo(p[0], p[1]) : octx.moveTo(p[0], p[1]); });
      octx.stroke(); octx.lineWidth = 1;
    }
    const p = dataPx(out, x[0], x[1]);
    octx.fillStyle = "#d62728"; octx.beginPath(); octx.arc(p[0], p[1], 6, 0, 2 * Math.PI); octx.fill();
  } else {
    octx.fillStyle = "#fff"; octx.fillRect(0, 0, out.width, out.height);
    drawBars(octx, x, 0, 0, out.width, out.height);
  }
}
const api = { decode: (z) => Array.from(decode(z)), last: null, decodes: 0 };
window.pushforward = api;
function show(x, y) {
  const ab = snap(...fromPx(x, y)), z = toZ(ab[0], ab[1]), g = decode(z);
  api.last = { z: Array.from(z), x: Array.from(g), plane: plane.slice(), grid: !!grid };
  api.decodes += 1;
  drawLatent(toPx(ab[0], ab[1]));
  drawOut(g);
  const zs = Array.from(z).slice(0, 4).map((v) => v.toFixed(2)).join(", ") + (k > 4 ? ", …" : "");
  $("pf-out-cap").textContent = view === "points"
    ? `g(z) = (${g[0].toFixed(3)}, ${g[1].toFixed(3)}) at z = (${zs}), over the data`
    : `g(z) at z = (${zs})`;
}
function pointer(e) {
  const r = latent.getBoundingClientRect();
  return [(e.clientX - r.left) * W / r.width, (e.clientY - r.top) * H / r.height];
}
latent.addEventListener("pointermove", (e) => show(...pointer(e)));
latent.addEventListener("click", (e) => {
  const ab = snap(...fromPx(...pointer(e)));
  clicks = clicks.length === 2 ? [] : clicks;
  clicks.push(toZ(ab[0], ab[1]));
  if (clicks.length === 2) interpolate();
  show(...pointer(e));
});
function interpolate() {
  const steps = view === "image" ? 10 : 60, zs = [];
  for (let s = 0; s < steps; s++) {
    const t = s / (steps - 1);
    zs.push(clicks[0].map((v, j) => (1 - t) * v + t * clicks[1][j]));
  }
  const xs = zs.map(decode);
  api.interpolation = xs.map((x) => Array.from(x));
  if (view === "points") { path = xs; return; }
  const fig = $("pf-interp-fig"), c = $("pf-interp"), ctx = c.getContext("2d");
  fig.hidden = false;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  const box = c.width / steps;
  xs.forEach((x, i) => view === "image" ? drawImage(ctx, x, 0, i * box + 2, 2, box - 4)
    : drawBars(ctx, x, i * box + 2, 2, box - 4, c.height - 4));
}
if (k > 2 && !grid) {
  $("pf-planes").hidden = false;
  const sliders = [$("pf-dir-a"), $("pf-dir-b")];
  sliders.forEach((s, i) => {
    s.max = String(k); s.value = String(i + 1);
    $(s.id + "-v").textContent = s.value;
    s.addEventListener("input", () => {
      const a = +sliders[0].value - 1, b = +sliders[1].value - 1;
      $(s.id + "-v").textContent = s.value;
      if (a === b) return;  // a plane needs two different directions
      plane = [a, b]; clicks = []; path = null; drawCodes();
    });
  });
}
function scrubber(key, slider, label, canvas, text) {
  const F = P[key];
  if (!F) return;
  $(canvas).parentElement.parentElement.hidden = false;
  const frames = arr(F.samples), [S, r] = F.samples.shape, per = frames.length / S;
  const c = $(canvas), ctx = c.getContext("2d"), s = $(slider);
  s.max = String(S - 1); s.value = String(S - 1);
  function draw(i) {
    const x = frames.subarray(i * per, (i + 1) * per);
    if (view === "image") {
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
      const cols = Math.ceil(Math.sqrt(r)), box = c.width / cols, pix = per / r;
      for (let n = 0; n < r; n++) drawImage(ctx, x, n * pix, (n % cols) * box + 1, Math.floor(n / cols) * box + 1, box - 2);
    } else {
      drawData(ctx);
      ctx.fillStyle = "#e08000";
      for (let n = 0; n < r; n++) { const p = dataPx(c, x[2 * n], x[2 * n + 1]); ctx.fillRect(p[0] - 1.5, p[1] - 1.5, 3, 3); }
    }
    $(label).textContent = text(F, i);
    api[key + "Frame"] = i;
  }
  s.addEventListener("input", () => draw(+s.value));
  draw(S - 1);
}
scrubber("snapshots", "pf-epoch", "pf-epoch-v", "pf-epoch-canvas", (F, i) => `epoch ${F.epochs[i]}`);
scrubber("motion", "pf-time", "pf-time-v", "pf-time-canvas", (F, i) => `t = ${F.times[i].toFixed(2)}`);
api.timeDecode = (m) => {  // mean milliseconds per decode over m decodes of random codes
  const zs = [];
  for (let i = 0; i < m; i++) zs.push(toZ(ext.lo[0] + Math.random() * (ext.hi[0] - ext.lo[0]), ext.lo[1] + Math.random() * (ext.hi[1] - ext.lo[1])));
  const t0 = performance.now();
  for (const z of zs) decode(z);
  return (performance.now() - t0) / m;
};
$("pf-note").textContent = `A ${k}-dimensional latent space, data of dimension ${d}; decoding runs in this page`
  + (grid ? " from a precomputed grid of decodes." : " from the decoder's weights.");
drawCodes();
show(W / 2, H / 2);
api.ready = true;
})();
"""

// The explorer page's script (pushforward.explore): decodes z in the page, draws, scrubs.
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
  "leaky_relu_0.2": (v) => (v > 0 ? v : 0.2 * v),
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
const COLORS = P.palette;  // label v in COLORS[v mod 10], as the legend under the canvas says
const latent = $("pf-latent"), lctx = latent.getContext("2d");
const out = $("pf-out"), octx = out.getContext("2d");
const W = latent.width, H = latent.height;
function toPx(a, b) {
  return [(a - ext.lo[0]) / (ext.hi[0] - ext.lo[0]) * W, (ext.hi[1] - b) / (ext.hi[1] - ext.lo[1]) * H];
}
function fromPx(x, y) {
  return [ext.lo[0] + x / W * (ext.hi[0] - ext.lo[0]), ext.hi[1] - y / H * (ext.hi[1] - ext.lo[1])];
}
const mass = P.mass ? { ...P.mass, v: arr(P.mass.values) } : null;
function massLayer() {  // a W x H canvas shading mu's mass on the current plane, or null
  if (!mass) return null;
  const swap = plane[0] > plane[1], a = Math.min(...plane), b = Math.max(...plane);
  const i = mass.planes.findIndex((q) => q[0] === a && q[1] === b);
  if (i < 0) return null;
  const S = mass.side, off = i * S * S, [lo, hi] = mass.boxes[i];
  const cell = (ix, iy) => mass.v[off + Math.min(S - 1, Math.max(0, iy)) * S + Math.min(S - 1, Math.max(0, ix))];
  const c = document.createElement("canvas");
  c.width = W; c.height = H;
  const g = c.getContext("2d"), im = g.createImageData(W, H);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const ab = fromPx(x + 0.5, y + 0.5), u = swap ? [ab[1], ab[0]] : ab;
      if (u[0] < lo[0] || u[0] > hi[0] || u[1] < lo[1] || u[1] > hi[1]) continue;
      // m between the cell centres (stored: cell (ix, iy) at iy * S + ix), bilinear
      const fx = (u[0] - lo[0]) / (hi[0] - lo[0]) * S - 0.5, fy = (u[1] - lo[1]) / (hi[1] - lo[1]) * S - 0.5;
      const ix = Math.floor(fx), iy = Math.floor(fy), tx = fx - ix, ty = fy - iy;
      const v = (1 - ty) * ((1 - tx) * cell(ix, iy) + tx * cell(ix + 1, iy))
        + ty * ((1 - tx) * cell(ix, iy + 1) + tx * cell(ix + 1, iy + 1));
      // m >= 0.5, 0.1, 0.01: inside the regions of mu's densest 50%, 90%, 99% of mass
      const o = 4 * (y * W + x);
      im.data[o] = 110; im.data[o + 1] = 90; im.data[o + 2] = 170;
      im.data[o + 3] = v >= 0.5 ? 150 : v >= 0.1 ? 85 : v >= 0.01 ? 35 : 0;
    }
  }
  g.putImageData(im, 0, 0);
  return c;
}
let base = null, shade = null;
function drawCodes() {
  ext = extent();
  const c = document.createElement("canvas");
  c.width = W; c.height = H;
  const g = c.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, W, H);
  shade = massLayer();
  if (shade) g.drawImage(shade, 0, 0);
  for (let n = 0; n < nCodes; n++) {
    const ab = project(Z.subarray(n * k, n * k + k)), px = toPx(ab[0], ab[1]);
    g.fillStyle = P.labels ? COLORS[((P.labels[n] % COLORS.length) + COLORS.length) % COLORS.length] : "#4477aa";
    g.globalAlpha = 0.6; g.fillRect(px[0] - 1.5, px[1] - 1.5, 3, 3);
  }
  base = c;
  const dirs = k > 2 ? ` (principal directions ${plane[0] + 1} and ${plane[1] + 1} of the codes)` : "";
  $("pf-latent-cap").textContent = `${P.codes.label || "the latent plane"}${dirs}`
    + (P.labels ? ", coloured by label" : "")
    + (shade ? "; shaded, darkest first: where μ's densest 50%, 90% and 99% of mass lie"
      + (k > 2 ? " (this plane's slice)" : "")
      : mass ? "; μ's mass is shaded on the planes of the first 6 directions" : "")
    + "; "
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
function dataPx(canvas, x, y, e = dataExt) {
  return [(x - e.lo[0]) / (e.hi[0] - e.lo[0]) * canvas.width,
    (e.hi[1] - y) / (e.hi[1] - e.lo[1]) * canvas.height];
}
function framesExt(frames) {  // the data's box, grown to hold 99% of the frames' points
  if (!dataExt) return null;
  const lo = dataExt.lo.slice(), hi = dataExt.hi.slice();
  for (let i = 0; i < 2; i++) {
    const v = Float32Array.from({ length: frames.length / 2 }, (_, n) => frames[2 * n + i]).sort();
    const q = (p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
    lo[i] = Math.min(lo[i], q(0.005)); hi[i] = Math.max(hi[i], q(0.995));
  }
  return { lo, hi };
}
function drawData(ctx, e = dataExt) {
  const c = ctx.canvas;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  if (!DATA) return;
  ctx.fillStyle = "#bbb";
  for (let n = 0; n < DATA.length / 2; n++) {
    const p = dataPx(c, DATA[2 * n], DATA[2 * n + 1], e);
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
  const e = view === "image" ? null : framesExt(frames);
  s.max = String(S - 1); s.value = String(S - 1);
  function draw(i) {
    const x = frames.subarray(i * per, (i + 1) * per);
    if (view === "image") {
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
      const cols = Math.ceil(Math.sqrt(r)), box = c.width / cols, pix = per / r;
      for (let n = 0; n < r; n++) drawImage(ctx, x, n * pix, (n % cols) * box + 1, Math.floor(n / cols) * box + 1, box - 2);
    } else {
      drawData(ctx, e);
      ctx.fillStyle = "#e08000";
      for (let n = 0; n < r; n++) {
        const p = dataPx(c, x[2 * n], x[2 * n + 1], e);
        ctx.fillRect(p[0] - 1.5, p[1] - 1.5, 3, 3);
      }
    }
    $(label).textContent = text(F, i);
    api[key + "Frame"] = i;
  }
  s.addEventListener("input", () => draw(+s.value));
  draw(S - 1);
}
scrubber("snapshots", "pf-epoch", "pf-epoch-v", "pf-epoch-canvas", (F, i) => `epoch ${F.epochs[i]}`);
scrubber("motion", "pf-time", "pf-time-v", "pf-time-canvas", (F, i) => `t = ${F.times[i].toFixed(2)}`);
api.shadeAt = (a, b) => {  // the shade's opacity (0-255) drawn at plane coordinates (a, b)
  if (!shade) return null;
  const px = toPx(a, b);
  return shade.getContext("2d").getImageData(Math.floor(px[0]), Math.floor(px[1]), 1, 1).data[3];
};
api.setPlane = (a, b) => {
  const s = [$("pf-dir-a"), $("pf-dir-b")];
  s[0].value = String(a + 1); s[0].dispatchEvent(new Event("input"));
  s[1].value = String(b + 1); s[1].dispatchEvent(new Event("input"));
};
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

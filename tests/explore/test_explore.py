"""The explorer page: decoder programs are the decoders, the page's JavaScript decodes as PyTorch
does, its scrubbers move, nothing is fetched, the size budget holds, and runs it cannot draw get
one clear error. Also the sample snapshots that feed the epoch scrubber."""

import base64
import json
import math
import re
import shutil
from dataclasses import fields
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from pushforward.cli import main
from pushforward.core import ConfigError, Model
from pushforward.data import datasets
from pushforward.explore import JS_ACTIVATIONS, PALETTE, explore_run, explorer_page
from pushforward.measures import StandardNormal
from pushforward.models.pca import PCA, PCAConfig
from pushforward.models.registry import MODELS
from pushforward.models.vae import VAE, VAEConfig
from pushforward.nets import ACTIVATIONS, MLP, apply_layers
from pushforward.runs import RunConfig, fit_run, load_model
from pushforward.train import TrainConfig, fit, read_snapshots, seeded

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def payload(page: str) -> dict:
    """The JSON the page's script reads."""
    m = re.search(r'<script type="application/json" id="pf-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1).replace("<\\/", "</"))


def unpack(a: dict) -> np.ndarray:
    """An array of the payload, decoded independently of the page's script."""
    raw = base64.b64decode(a["b64"])
    if a["dtype"] == "u8":
        values = np.frombuffer(raw, dtype=np.uint8) / 255.0
    else:
        values = np.frombuffer(raw, dtype={"f32": "<f4", "f16": "<f2"}[a["dtype"]])
    return values.astype(np.float64).reshape(a["shape"])


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


# the activations written from their definitions, not through torch
REFERENCE = {
    "relu": lambda v: np.maximum(v, 0.0),
    "leaky_relu": lambda v: np.where(v > 0, v, 0.01 * v),
    "leaky_relu_0.2": lambda v: np.where(v > 0, v, 0.2 * v),
    "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0))),
    "gelu": lambda v: 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0))),
    "silu": lambda v: v / (1.0 + np.exp(-v)),
    "tanh": np.tanh,
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "identity": lambda v: v,
}


def run_program(layers: list[dict], z: np.ndarray) -> np.ndarray:
    """Evaluate the page's decoder program (n, k) → (n, d) in numpy, float64."""
    h = z.astype(np.float64)
    for layer in layers:
        if layer["op"] == "linear":
            h = h @ unpack(layer["W"]).T + unpack(layer["b"])
        elif layer["op"] == "affine":
            h = unpack(layer["c"]) + unpack(layer["s"]) * h
        else:
            h = REFERENCE[layer["name"]](h)
    return h


def test_the_page_and_the_reference_know_every_activation_of_the_nets():
    assert set(JS_ACTIVATIONS) == set(ACTIVATIONS) == set(REFERENCE)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_an_mlp_program_is_the_mlp(activation):
    with seeded(0):
        mlp = MLP(2, [16, 8], 5, activation=activation)
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        expected = mlp(z)
    torch.testing.assert_close(apply_layers(mlp.portable(), z), expected)
    steps = [{"op": "linear", "W": _f32(s[1]), "b": _f32(s[2])} if s[0] == "linear"
             else {"op": "activation", "name": s[1]} for s in mlp.portable()]  # fmt: skip
    np.testing.assert_allclose(run_program(steps, z.double().numpy()), expected, atol=1e-5)


def _f32(t: torch.Tensor) -> dict:
    a = t.detach().numpy().astype("<f4")
    return {"dtype": "f32", "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def test_a_conv_decoder_has_no_program_and_the_page_falls_back_to_a_grid():
    digits = datasets.load_data("digits")
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=64,
                latent=2,
                loss="bce",
                image_shape=(8, 8),
                net="conv",
                hidden=[4, 8],
                activation="relu",
            )
        )
    assert vae.decoder_layers() is None
    p = payload(explorer_page(vae, digits, points=300))
    grid = p["decoder"]
    assert grid["kind"] == "grid" and grid["side"] == 64
    values = unpack(grid["values"])  # (side², d)
    side, lo, hi = grid["side"], grid["lo"], grid["hi"]
    for ix, iy in [(0, 0), (63, 5), (20, 41)]:
        z = [lo[i] + (c + 0.5) * (hi[i] - lo[i]) / side for i, c in enumerate((ix, iy))]
        with torch.no_grad():
            x = vae.decode(torch.tensor([z]))[0].double().numpy()
        np.testing.assert_allclose(values[iy * side + ix], x, atol=1e-3)


# --- every model of the registry, from its run folder ---------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_gets_a_page_from_its_run_folder(tmp_path, name):
    spec = MODELS[name]
    values = {"model": name, "data": "digits", "rows": ":300"}
    if "latent" in {f.name for f in fields(spec.config)}:
        values["latent"] = 2
    if spec.trained:
        values.update(epochs=1, batch_size=100)
    if name == "fm":  # a small field: the image default's 3×1,024 only slows the page's encodes
        values["hidden"] = [64, 64]
    folder = fit_run(RunConfig.from_flat(values), out=tmp_path / "run", figures=False)
    model = load_model(folder)
    path = explore_run(folder, tmp_path / "page.html", points=200)
    p = payload(path.read_text(encoding="utf-8"))
    shown = (p["latent"], p["dim"], p["view"], p["image_shape"])
    assert shown == (model.latent, 64, "image", [8, 8])
    codes = unpack(p["codes"]["z"])
    held_out = datasets.load_data("digits").x[300:500]  # the rows the run did not train on
    with torch.no_grad():
        if model.has_encoder:
            np.testing.assert_allclose(codes, model.encode(held_out).double(), atol=1e-5)
            assert p["labels"] == datasets.load_data("digits").labels[300:500].tolist()
        else:
            assert codes.shape == (200, model.latent) and p["codes"]["label"] == "draws of μ"
        layers = model.decoder_layers()
        z = torch.randn(6, model.latent, generator=torch.Generator().manual_seed(0))
        if layers is not None:
            assert p["decoder"]["kind"] == "layers"
            got = run_program(p["decoder"]["layers"], z.double().numpy())
            np.testing.assert_allclose(got, model.decode(z).double(), atol=1e-4)
        else:
            assert p["decoder"]["kind"] == "grid"


class Drift(Model):
    """A test-only pushforward with motion: g(z) = A z + b on the plane, and particles carried
    along straight lines x_t = (1 − t) z + t g(z) from z ~ N(0, I)."""

    has_motion = True

    def __init__(self):
        self.dim = self.latent = 2
        self.A = torch.tensor([[1.5, 0.5], [0.0, 0.5]])
        self.b = torch.tensor([1.0, -1.0])

    @property
    def latent_measure(self):
        return StandardNormal(2)

    def decode(self, z):
        return z @ self.A.T + self.b

    def decoder_layers(self):
        return [("linear", self.A, self.b)]

    def sample(self, n, *, generator=None):
        return self.decode(torch.randn(n, 2, generator=generator))

    def motion(self, n, times, *, generator=None):
        z = torch.randn(n, 2, generator=generator)
        return torch.stack([(1 - t) * z + t * self.decode(z) for t in times])  # (T, n, 2)


class Undecodable(Drift):
    has_decoder = False


def test_a_model_with_motion_gets_the_t_scrubber_from_the_contract():
    moons = datasets.load_data("moons", n=500)
    p = payload(explorer_page(Drift(), moons, points=300, seed=4))
    times, frames = p["motion"]["times"], unpack(p["motion"]["samples"])
    assert times[0] == 0 and times[-1] == 1 and frames.shape == (21, 1000, 2)
    expected = Drift().motion(1000, torch.tensor(times), generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(frames[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(frames[-1], Drift().decode(expected[0]), atol=1e-5)
    assert "motion" not in payload(explorer_page(VAE(VAEConfig(dim=2, latent=2)), moons, points=50))


def test_runs_the_explorer_cannot_draw_get_one_clear_error(capsys, tmp_path):
    moons = datasets.load_data("moons", n=100)
    with pytest.raises(ConfigError, match=r"explore needs a decoder g: z ↦ x.* Undecodable"):
        explorer_page(Undecodable(), moons)
    rc = RunConfig.from_flat({"model": "ae", "data": "moons", "n": 200, "latent": 1, "epochs": 1})
    folder = fit_run(rc, out=tmp_path / "run", figures=False)
    code = main(["explore", str(folder), "--out", str(tmp_path / "page.html")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "explore needs a latent space of at least 2 dimensions" in err
    assert "latent k = 1" in err and not (tmp_path / "page.html").exists()
    code = main(["explore", str(folder), "--out", str(tmp_path / "page.png")])
    assert code == 2 and "use a .html file" in capsys.readouterr().err


# --- the latent canvas's legend and plane, read from the page without a browser --------------


class _Legend(HTMLParser):
    """The keys of the page's legend: (colour, text) of each ``span.key`` in ``#pf-legend``."""

    def __init__(self):
        super().__init__()
        self.found, self.keys = False, []
        self._depth = 0  # open elements inside the legend

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "pf-legend":
            self.found, self._depth = True, 1
        elif self._depth:
            self._depth += 1
            if tag == "i":
                self.keys.append([re.search(r"background:(#[0-9a-f]{6})", a["style"])[1], ""])

    def handle_endtag(self, tag):
        if self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._depth and self.keys:
            self.keys[-1][1] += data


def _legend(page: str) -> _Legend:
    parser = _Legend()
    parser.feed(page)
    parser.keys = [[colour, text.strip()] for colour, text in parser.keys]
    return parser


def test_the_latent_canvas_has_a_legend_of_the_label_colours():
    digits = datasets.load_data("digits")
    page = explorer_page(PCA(PCAConfig(latent=2)).fit(digits.x), digits, points=500)
    p = payload(page)
    legend = _legend(page)
    assert legend.found
    assert legend.keys == [[PALETTE[v], str(v)] for v in range(10)]
    assert p["palette"] == list(PALETTE)  # the script colours each code from the same palette
    assert sorted(set(p["labels"])) == list(range(10))
    script = page.rsplit("<script>", 1)[1]
    assert "P.palette" in script and PALETTE[0] not in script  # no second palette to drift


def test_labels_beyond_the_palette_share_a_key_and_unlabelled_codes_get_none():
    grid = datasets.load_data("grid25", n=2000, generator=torch.Generator().manual_seed(0))
    keys = _legend(explorer_page(PCA(PCAConfig(latent=2)).fit(grid.x), grid, points=2000)).keys
    assert keys == [[PALETTE[c], ", ".join(str(v) for v in range(c, 25, 10))] for c in range(10)]
    unlabelled = datasets.Dataset(x=grid.x, name="no labels")
    page = explorer_page(PCA(PCAConfig(latent=2)).fit(grid.x), unlabelled, points=100)
    assert not _legend(page).found and payload(page)["labels"] is None


def test_the_plane_of_a_larger_latent_space_is_the_codes_principal_directions():
    digits = datasets.load_data("digits")
    model = PCA(PCAConfig(latent=5)).fit(digits.x)
    p = payload(explorer_page(model, digits, points=600))
    with torch.no_grad():
        codes = model.encode(digits.x[:600]).double()
    reference = PCA(PCAConfig(latent=5)).fit(codes)  # an independent fit of the same codes
    np.testing.assert_allclose(unpack(p["plane"]["center"]), reference.mean_, atol=1e-5)
    np.testing.assert_allclose(unpack(p["plane"]["axes"]), reference.components_, atol=1e-5)


# --- the size budget, and the page in a real browser --------------------------------------------


def _big_vae() -> tuple[VAE, datasets.Dataset, tuple[list[int], torch.Tensor]]:
    """A 784-512-2 decoder (random weights) over fake 28×28 images, with 30 snapshots."""
    gen = torch.Generator().manual_seed(0)
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=784, latent=2, loss="bce", image_shape=(28, 28), hidden=[512], activation="relu"
            )
        )
    images = datasets.Dataset(
        x=torch.rand(2000, 784, generator=gen), name="fake", image_shape=(28, 28),
        labels=torch.randint(0, 10, (2000,), generator=gen),
    )  # fmt: skip
    snaps = (list(range(0, 60, 2)), torch.rand(30, 64, 784, generator=gen))
    return vae, images, snaps


def test_a_784_512_2_decoder_page_stays_under_5_mb():
    vae, images, snaps = _big_vae()
    page = explorer_page(vae, images, snapshots=snaps)
    assert len(page.encode("utf-8")) <= 5_000_000
    layers = payload(page)["decoder"]["layers"]
    assert {layer["W"]["dtype"] for layer in layers if layer["op"] == "linear"} == {"f16"}


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _f16_weights(vae: VAE) -> VAE:
    """The same VAE with its decoder's weights rounded to float16, as the page holds them."""
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.copy_(p.half().float())
    return vae


@pytest.fixture(scope="module")
def browser():
    if _chromium() is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=flags)
        yield b
        b.close()


def _open(browser, path: Path):
    """Open a page, recording errors and every request other than the page itself."""
    page = browser.new_page(viewport={"width": 1000, "height": 1000})
    seen = {"errors": [], "requests": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    url = path.as_uri()
    page.on("request", lambda r: None if r.url in (url, "about:blank") or r.url.startswith(
        "data:") else seen["requests"].append(r.url))  # fmt: skip
    page.goto(url)
    page.wait_for_function("() => window.pushforward && window.pushforward.ready")
    return page, seen


def _frame(page, canvas: str) -> str:
    return page.evaluate(f"() => document.getElementById('{canvas}').toDataURL()")


def _scrub(page, slider: str, value: int) -> None:
    page.evaluate(f"""() => {{ const s = document.getElementById('{slider}');
        s.value = '{value}'; s.dispatchEvent(new Event('input')); }}""")


def test_the_page_decodes_as_pytorch_does_scrubs_training_and_fetches_nothing(browser, tmp_path):
    vae, images, snaps = _big_vae()
    path = tmp_path / "page.html"
    path.write_text(explorer_page(vae, images, snapshots=snaps), encoding="utf-8")
    page, seen = _open(browser, path)
    box = page.locator("#pf-latent").bounding_box()
    rounded = _f16_weights(_big_vae()[0])
    zs = []
    for fx, fy in [(0.2, 0.3), (0.5, 0.5), (0.85, 0.7)]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        last = page.evaluate("() => window.pushforward.last")
        z = torch.tensor([last["z"]], dtype=torch.float32)
        with torch.no_grad():
            exact, same_weights = vae.decode(z)[0], rounded.decode(z)[0]
        got = torch.tensor(last["x"], dtype=torch.float32)
        torch.testing.assert_close(got, exact, atol=1e-3, rtol=0)
        torch.testing.assert_close(got, same_weights, atol=1e-5, rtol=0)
        zs.append(last["z"])
    assert zs[0] != zs[1] != zs[2]
    # two clicks: the interpolation runs from one code to the other
    page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + 0.1 * box["height"])
    page.mouse.click(box["x"] + 0.9 * box["width"], box["y"] + 0.9 * box["height"])
    strip = page.evaluate("() => window.pushforward.interpolation")
    assert len(strip) == 10
    np.testing.assert_allclose(strip[-1], page.evaluate("() => window.pushforward.last.x"))
    # the epoch scrubber: the last frame is shown first; the first one draws something else
    before = _frame(page, "pf-epoch-canvas")
    _scrub(page, "pf-epoch", 0)
    assert page.evaluate("() => window.pushforward.snapshotsFrame") == 0
    assert _frame(page, "pf-epoch-canvas") != before
    assert "epoch 0" in page.inner_text("#pf-epoch-v")
    ms = page.evaluate("() => window.pushforward.timeDecode(300)")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "explore-decode-ms.txt").write_text(f"{ms:.3f} ms per decode (784-512-2)\n")
    assert ms < 16
    page.close()
    assert seen["errors"] == [] and seen["requests"] == []


def test_the_t_scrubber_moves_the_particles_in_the_browser(browser, tmp_path):
    path = tmp_path / "page.html"
    path.write_text(explorer_page(Drift(), datasets.load_data("moons", n=500)), encoding="utf-8")
    page, seen = _open(browser, path)
    box = page.locator("#pf-latent").bounding_box()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.6 * box["height"])
    last = page.evaluate("() => window.pushforward.last")
    np.testing.assert_allclose(last["x"], Drift().decode(torch.tensor([last["z"]]))[0], atol=1e-5)
    before = _frame(page, "pf-time-canvas")
    _scrub(page, "pf-time", 0)
    assert page.inner_text("#pf-time-v") == "t = 0.00"
    assert _frame(page, "pf-time-canvas") != before
    page.close()
    assert seen["errors"] == [] and seen["requests"] == []


def test_sliders_choose_the_plane_of_a_larger_latent_space(browser, tmp_path):
    digits = datasets.load_data("digits")
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=64, latent=4, loss="bce", image_shape=(8, 8), hidden=[32], activation="gelu"
            )
        )
    path = tmp_path / "page.html"
    path.write_text(explorer_page(vae, digits, points=500), encoding="utf-8")
    p = payload(path.read_text(encoding="utf-8"))
    axes, center = unpack(p["plane"]["axes"]), unpack(p["plane"]["center"])
    with torch.no_grad():
        codes = vae.encode(digits.x[:500]).double().numpy()
    np.testing.assert_allclose(axes @ axes.T, np.eye(4), atol=1e-5)  # principal directions
    variances = ((codes - center) @ axes.T).var(0)
    assert all(np.diff(variances) <= 1e-9)
    page, seen = _open(browser, path)
    before = _frame(page, "pf-latent")
    _scrub(page, "pf-dir-b", 3)  # the plane of directions 1 and 3
    assert _frame(page, "pf-latent") != before
    box = page.locator("#pf-latent").bounding_box()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.7 * box["height"])
    last = page.evaluate("() => window.pushforward.last")
    assert last["plane"] == [0, 2]
    z = np.array(last["z"])
    offset = (z - center) @ axes.T  # no component off the chosen plane
    np.testing.assert_allclose(offset[[1, 3]], 0, atol=1e-5)
    with torch.no_grad():
        expected = vae.decode(torch.tensor([last["z"]], dtype=torch.float32))[0]
    torch.testing.assert_close(torch.tensor(last["x"]), expected, atol=1e-5, rtol=0)
    page.close()
    assert seen["errors"] == [] and seen["requests"] == []


def test_the_grid_fallback_snaps_the_pointer_to_a_decoded_cell(browser, tmp_path):
    digits = datasets.load_data("digits")
    with seeded(0):
        vae = VAE(
            VAEConfig(
                dim=64,
                latent=2,
                loss="bce",
                image_shape=(8, 8),
                net="conv",
                hidden=[4, 8],
                activation="relu",
            )
        )
    path = tmp_path / "page.html"
    path.write_text(explorer_page(vae, digits, points=300), encoding="utf-8")
    page, seen = _open(browser, path)
    box = page.locator("#pf-latent").bounding_box()
    page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.55 * box["height"])
    last = page.evaluate("() => window.pushforward.last")
    assert last["grid"]
    with torch.no_grad():
        expected = vae.decode(torch.tensor([last["z"]], dtype=torch.float32))[0]
    torch.testing.assert_close(torch.tensor(last["x"]), expected, atol=1e-3, rtol=0)
    page.close()
    assert seen["errors"] == [] and seen["requests"] == []


# --- snapshots ------------------------------------------------------------------------------


def test_snapshots_are_kept_every_k_epochs_and_resume_exactly(tmp_path):
    # a constant rate: a cosine one (the VAE's default on points) differs between 4 and 5 epochs
    base = {"model": "vae", "data": "moons", "n": 256, "batch_size": 64, "snapshot_every": 2,
            "lr_schedule": "constant"}  # fmt: skip
    full = fit_run(RunConfig.from_flat({**base, "epochs": 5}), out=tmp_path / "a", figures=False)
    part = fit_run(RunConfig.from_flat({**base, "epochs": 4}), out=tmp_path / "b", figures=False)
    fit_run(RunConfig.from_flat({**base, "epochs": 5}), out=part, resume=True, figures=False)
    epochs, samples = read_snapshots(full)
    assert epochs == [0, 2, 4, 5] and samples.shape == (4, 1000, 2)
    resumed = read_snapshots(part)
    assert resumed[0] == epochs and torch.equal(resumed[1], samples)
    assert not torch.equal(samples[0], samples[-1])  # training moved g#μ
    model = load_model(full)
    with torch.no_grad():
        last = model.sample(1000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples[-1], last)  # the fixed-seed set, at the final weights
    page = payload(explorer_page(model, datasets.load_data("moons", n=300), snapshots=resumed))
    assert page["snapshots"]["epochs"] == epochs


def test_snapshots_need_a_model_that_samples(tmp_path):
    rc = RunConfig.from_flat({"model": "ae", "data": "moons", "n": 200, "snapshot_every": 1})
    with pytest.raises(ConfigError, match=r"snapshot_every = 1 .* cannot sample; use 0"):
        fit_run(rc, out=tmp_path / "run", figures=False)
    assert read_snapshots(tmp_path) is None


# --- μ's mass under the codes -------------------------------------------------------------------


def _cells(lo, hi, side):
    """Cell centres (side², 2) of a side × side grid over [lo, hi], row iy·side + ix."""
    a = lo[0] + (np.arange(side) + 0.5) * (hi[0] - lo[0]) / side
    b = lo[1] + (np.arange(side) + 0.5) * (hi[1] - lo[1]) / side
    bb, aa = np.meshgrid(b, a, indexing="ij")
    return np.stack([aa.ravel(), bb.ravel()], 1)


def test_the_canvas_shades_the_standard_normal_prior_where_it_puts_its_mass():
    """k = 2 and μ = N(0, I): the share of μ's mass less dense than z is Pr[|Z|² > |z|²] =
    exp(−|z|²/2) (|Z|² is χ² with 2 degrees of freedom), the closed form, to the Monte Carlo
    error of the page's seeded draws and its byte rounding."""
    ring = datasets.load_data("ring8", n=500, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        vae = MODELS["vae"].config(latent=2, hidden=[16], prior="normal").build(ring)
    fit(vae, ring.x, TrainConfig(epochs=30, batch_size=100, seed=0))  # codes spread over N(0, I)
    p = payload(explorer_page(vae, ring, points=500))
    mass = p["mass"]
    assert mass["planes"] == [[0, 1]]
    with torch.no_grad():
        codes = vae.encode(ring.x).numpy()
    lo, hi = mass["boxes"][0]
    span = codes.max(0) - codes.min(0)  # the codes' box, padded 5% a side, as the page pads it
    np.testing.assert_allclose(lo, codes.min(0) - 0.05 * span, atol=1e-5)
    np.testing.assert_allclose(hi, codes.max(0) + 0.05 * span, atol=1e-5)
    z = _cells(lo, hi, mass["side"])
    expected = np.exp(-0.5 * (z**2).sum(1))
    assert expected.max() - expected.min() > 0.5  # a shade with structure to get wrong
    np.testing.assert_allclose(unpack(mass["values"])[0], expected, atol=0.02)


def test_the_shade_of_a_mixture_sampler_is_its_density_on_each_plane_of_the_codes():
    """k = 3 and the `gmm` sampler (a full-covariance mixture fitted to the codes): on each
    plane of two principal directions through the codes' centre, the share of the mixture's
    mass less dense than z, from torch.distributions' density and its own independent draws."""
    from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

    digits = datasets.load_data("digits")
    with seeded(0):
        vae = MODELS["vae"].config(latent=3, hidden=[32], prior="gmm").build(digits)
    vae.finish(digits.x)
    p = payload(explorer_page(vae, digits, points=600))
    mass = p["mass"]
    assert mass["planes"] == [[0, 1], [0, 2], [1, 2]]
    mixture = MixtureSameFamily(
        Categorical(probs=vae.prior_weights.double()),
        MultivariateNormal(vae.prior_means.double(), vae.prior_covariances.double()),
    )
    torch.manual_seed(1)
    reference = np.sort(mixture.log_prob(mixture.sample((20_000,))).numpy())
    center, axes = unpack(p["plane"]["center"]), unpack(p["plane"]["axes"])
    values = unpack(mass["values"])
    for n, ((i, j), (lo, hi)) in enumerate(zip(mass["planes"], mass["boxes"], strict=True)):
        ab = _cells(lo, hi, mass["side"])
        z = center + ab[:, :1] * axes[i] + ab[:, 1:] * axes[j]
        log_p = mixture.log_prob(torch.from_numpy(z)).numpy()
        expected = np.searchsorted(reference, log_p, side="right") / reference.size
        assert expected.max() - expected.min() > 0.5  # a shade with structure to get wrong
        np.testing.assert_allclose(values[n], expected, atol=0.03)


def test_a_flat_noise_is_one_region_holding_all_of_its_mass():
    """A GAN's uniform noise on [−1, 1]²: every point of the square is as dense as any, so the
    whole square is shaded as the densest region (m = 1) and nothing outside it (m = 0)."""
    ring = datasets.load_data("ring8", n=300, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        gan = MODELS["gan"].config(latent=2, noise="uniform", hidden=[16]).build(ring)
    mass = payload(explorer_page(gan, ring, points=2000))["mass"]
    lo, hi = mass["boxes"][0]
    z = _cells(lo, hi, mass["side"])
    values = unpack(mass["values"])[0]
    inside = np.abs(z).max(1) < 1
    assert inside.any() and (~inside).any()  # the box is padded beyond the square
    np.testing.assert_array_equal(values[inside], 1.0)
    np.testing.assert_array_equal(values[~inside], 0.0)


def test_a_model_without_a_latent_density_gets_no_shade():
    ring = datasets.load_data("ring8", n=300, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        ae = MODELS["ae"].config(latent=2, hidden=[16]).build(ring)
    assert payload(explorer_page(ae, ring, points=300))["mass"] is None


def test_the_shade_follows_the_plane_in_the_browser(browser, tmp_path):
    """Drawn: dark where μ's density peaks, clear far from it; the plane of directions (2, 1) is
    the plane (1, 2) mirrored, so its shade at (b, a) is the first one's at (a, b) (checked at a
    point whose shade and its mirror image's differ, so that an unmirrored page fails); a plane
    past the shaded directions is drawn without a shade, and the caption says which it is."""
    digits = datasets.load_data("digits")
    with seeded(0):
        vae = MODELS["vae"].config(latent=7, hidden=[32], prior="gmm").build(digits)
    vae.finish(digits.x)
    path = tmp_path / "page.html"
    path.write_text(explorer_page(vae, digits, points=600), encoding="utf-8")
    mass = payload(path.read_text(encoding="utf-8"))["mass"]
    assert len(mass["planes"]) == 15  # any two of the first 6 directions
    lo, hi = mass["boxes"][0]
    z = _cells(lo, hi, mass["side"])
    values = unpack(mass["values"])[0]
    peak, low = z[values.argmax()], z[values.argmin()]
    page, seen = _open(browser, path)
    at = lambda a, b: page.evaluate(f"() => window.pushforward.shadeAt({a}, {b})")  # noqa: E731
    assert at(*peak) >= 120 and at(*low) <= 10
    assert "densest 50%, 90% and 99% of mass lie (this plane's slice)" in page.inner_text(
        "#pf-latent-cap"
    )
    # a dark cell whose mirror image (b, a) is in the box and much lighter
    inside = lambda q: all(lo[i] < q[i] < hi[i] for i in (0, 1))  # noqa: E731
    dark = [q for q, v in zip(z, values, strict=True) if v >= 0.5 and inside(q[::-1])]
    q = max(dark[:: max(1, len(dark) // 40)], key=lambda q: at(*q) - at(q[1], q[0]))
    before = (at(*q), at(q[1], q[0]))
    assert before[0] - before[1] >= 100, before
    page.evaluate("() => window.pushforward.setPlane(1, 0)")
    after = (at(q[1], q[0]), at(*q))  # the same points of the latent space, mirrored
    assert all(abs(a - b) <= 12 for a, b in zip(after, before, strict=True)), (after, before)
    page.evaluate("() => window.pushforward.setPlane(0, 6)")  # direction 7: not shaded
    assert page.evaluate("() => window.pushforward.shadeAt(0, 0)") is None
    assert "mass is shaded on the planes of the first 6 directions" in page.inner_text(
        "#pf-latent-cap"
    )
    page.close()
    assert seen["errors"] == [] and seen["requests"] == []

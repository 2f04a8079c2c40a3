"""The main job: `pushforward demo --quick` writes a self-contained report with every figure."""

import html
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pushforward.cli import main

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.headings = [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


# the quick demo takes about 100 s on 2 cores: run by `make test-slow` (and CI)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--workers", "2", "--out", str(out)]) == 0
    return out


def test_demo_writes_one_self_contained_report(demo):
    page = (demo / "report.html").read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    assert len(parser.srcs) >= 20
    assert all(re.match(r"data:image/(png|gif);base64,", s) for s in parser.srcs)
    assert not re.search(r'src="(?!data:)', page)  # nothing loaded from elsewhere
    assert parser.headings[0].startswith("The basic generative story")
    for words in ("Discrete pushforwards", "PCA and the autoencoder", "The VAE", "mixtures",
                  "exact densities", "The GAN on digits", "Flow matching",
                  "Fidelity to the truth"):  # fmt: skip
        assert any(words in h for h in parser.headings), words
    assert "Pr[Y = 3] = 1/18" in page
    # the encoders' and the image GAN's sections, made in the second process, stand in their
    # places: the encoders' before the VAE's on digits, the GAN's after it
    words = ("PCA", "The VAE: digits", "The GAN on digits")
    at = [next(i for i, h in enumerate(parser.headings) if w in h) for w in words]
    assert at == [3, 4, 5], parser.headings[:7]
    # the footer says how long each part took: ring8's here; the encoders', the image GAN's,
    # grid25's and the flow on digits in the second process
    took = re.search(r"It took (\d+) s: (.*?)\. Meanwhile, in a second process: (.*?)\.</footer>",
                     page)  # fmt: skip
    assert took is not None and len(took.group(2).split(", ")) == 11
    assert "GAN on the mixtures (ring8) " in took.group(2)
    assert len(took.group(3).split(", ")) == 9 and "flows (grid25) " in took.group(3)
    assert took.group(3).startswith("PCA and autoencoders ")
    assert took.group(3).split(", ")[-1].startswith("MAF on digits ")
    # the image GAN's table has the VAEs' rows (made here) above the GAN's (made beside)
    assert "VAE (k = 2, MLP), z ~ N(0, I)" in page and "GAN (k = " in page
    assert page.index("VAE (k = 2, MLP), mixture prior") < page.index("GAN (k = ")
    # --quick trains the MNIST GAN over half of its training digits, and its row says so
    from pushforward.data.datasets import find_mnist_folder

    assert ("4,000 rows seen" in page) == (find_mnist_folder() is not None)
    # the fidelity table: every model against the truth, whose own KL is 0
    table = page[page.rindex("Fidelity to the truth") :]
    for cell in ("KL(p ‖ q) nats", "— (no density)", "≤ ", "0.000 ± 0.000</td>", "flow matching"):
        assert cell in table, cell
    # the lecture's VAE and fit vae's default on points side by side: on both mixtures the
    # VampPrior lands far more of its samples on the modes than N(0, I) does
    for data in ("ring8", "grid25"):
        rows = {r[1]: r for r in _rows(table, data)}
        normal, vamp = rows["VAE, N(0, I) prior"], rows["VAE, VampPrior (the default)"]
        assert float(vamp[3].split()[0]) > float(normal[3].split()[0]) + 10, (normal, vamp)
        assert f"{data}, VampPrior: decode z live" in page
        assert f"{data}, N(0, I) prior: decode z live" in page


def test_demo_figures_are_real_images_and_the_training_animation_moves(demo):
    figures = sorted((demo / "figures").iterdir())
    assert {p.suffix for p in figures} == {".png", ".gif"}
    for p in figures:
        with Image.open(p) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    for name in ("train_ring8", "vamp_train_grid25", "flow_train_grid25", "fm_motion_ring8"):
        with Image.open(demo / "figures" / f"{name}.gif") as gif:
            assert gif.n_frames > 5, name
    names = {p.stem for p in figures}
    for data in ("ring8", "grid25"):
        assert {f"truth_density_{data}", f"flow_density_{data}", f"flow_samples_{data}"} <= names
        assert {f"fm_paths_{data}", f"fm_density_{data}_0.5", f"fm_density_{data}_1"} <= names
        assert {f"density_{data}", f"vamp_density_{data}", f"vamp_train_{data}"} <= names
    assert "flow_samples_digits" in names


def _rows(page: str, first: str) -> list[list[str]]:
    """The table rows of ``page`` whose first cell is ``first``, each a list of cells."""
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]
    return [[html.unescape(c) for c in row] for row in rows if row and row[0] == first]


def _cells(page: str, first: str) -> list[str]:
    """The table cells of the rows of ``page`` whose first cell is ``first``."""
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    return [c for row in cells if row and row[0] == first for c in row]


def test_the_second_process_makes_what_this_one_would(demo, tmp_path):
    """Two opening sections, grid25's chain and the flow on digits ran in a spawned process: made
    here, they give the same table rows, cell for cell, and the same pictures, byte for byte."""
    from pushforward.gallery import Report
    from pushforward.gallery.processes import AFTER, BESIDE, second_part

    made, chain = second_part(Report(tmp_path), "grid25", quick=True, seed=0)
    assert tuple(made) == (*BESIDE, AFTER)
    assert made[AFTER].figures and made[AFTER].tables
    page = (demo / "report.html").read_text(encoding="utf-8")
    shown = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]
    for sec in made.values():
        for _, rows in sec.tables:
            for row in rows:
                assert [html.escape(c) for c in row] in shown, row
        for _, path in sec.figures:
            assert path.read_bytes() == (demo / "figures" / path.name).read_bytes(), path.name
    here = [html.escape(c) for key in ("gan", "fidelity") for row in chain.rows[key] for c in row]
    there = _cells(page[page.index("<h2>The GAN: the same g") :], "grid25")
    assert len(here) == len(there) > 40
    assert here == there
    for part in chain.parts.values():
        for _, path in part.figures:
            assert path.read_bytes() == (demo / "figures" / path.name).read_bytes(), path.name


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_report_opens_in_a_real_browser_with_every_image_loaded(demo):
    playwright = pytest.importorskip("playwright.sync_api")
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((demo / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert len(images) >= 20
    assert [alt for alt, done, width in images if not (done and width > 0)] == []
    assert errors == []
    with Image.open(ARTIFACTS / "report.png") as shot:
        assert shot.size[1] > 3000  # the whole page, not just the first screen

"""The HTML document shared by the gallery and the explorer: escaped text, inlined images,
right-aligned numbers, written atomically."""

import base64
import re

from PIL import Image

from pushforward.pages import Page, embedded_figure, embedded_page, table


def _png(path, colour=(255, 0, 0)):
    Image.new("RGB", (4, 3), colour).save(path)
    return path


def test_a_page_is_one_document_with_its_title_escaped_and_its_blocks_in_order(tmp_path):
    page = Page("a < b & c", css="h1{color:red}", body=["<p>one</p>", "<p>two</p>"])
    text = page.to_html()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</body></html>")
    assert "<title>a &lt; b &amp; c</title>" in text and "<h1>a &lt; b &amp; c</h1>" in text
    assert text.index("<p>one</p>") < text.index("<p>two</p>")
    assert re.search(r"<style>[^<]*h1\{color:red\}</style>", text)  # after the base style
    path = page.write(tmp_path / "p.html")
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]  # no temporary file left


def test_figures_are_inlined_byte_for_byte_and_pages_as_srcdoc(tmp_path):
    png = _png(tmp_path / "f.png")
    fig = embedded_figure(png, 'a "quoted" caption')
    data = re.search(r'src="data:image/png;base64,([^"]+)"', fig)[1]
    assert base64.b64decode(data) == png.read_bytes()
    assert 'alt="a &quot;quoted&quot; caption"' in fig
    gif = tmp_path / "a.gif"
    gif.write_bytes(b"GIF89a")
    assert 'src="data:image/gif;base64,' in embedded_figure(gif, "gif")
    inner = '<p class="x">"hi" & <b>bye</b></p>'
    outer = embedded_page(inner, "caption", 300)
    assert 'height="300"' in outer and "<p" not in outer
    assert 'srcdoc="&lt;p class=&quot;x&quot;&gt;&quot;hi&quot; &amp; &lt;b&gt;' in outer


def test_tables_escape_text_and_right_align_numbers():
    t = table(["name", "value"], [["a<b", "1,500"], ["c", "0.41 ± 0.02"], ["d", "—"]])
    cells = re.findall(r"<td( class=\"num\")?>(.*?)</td>", t)
    assert cells == [("", "a&lt;b"), (' class="num"', "1,500"), ("", "c"),
                     (' class="num"', "0.41 ± 0.02"), ("", "d"), ("", "—")]  # fmt: skip
    assert re.findall(r"<th>(.*?)</th>", t) == ["name", "value"]

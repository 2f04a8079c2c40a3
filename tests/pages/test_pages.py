"""The HTML document shared by the gallery and the explorer: escaped text, inlined images,
right-aligned numbers, written atomically; and the gallery's page built on it."""

import base64
import re

from PIL import Image

from pushforward.gallery import Report, Section
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


def test_the_gallery_page_holds_its_sections_in_order_with_a_table_of_contents(tmp_path):
    report = Report(tmp_path, title="gallery")
    first, second = Section("First", "the <em>first</em>"), Section("Second & last", "text")
    first.tables.append((["k", "error"], [["2", "0.125"]]))
    first.figures.append(("red", _png(tmp_path / "red.png")))
    second.pages.append(("an explorer", "<p>inside</p>", 640))
    report.sections += [first, second]
    report.timings += [("part one", 3.2), ("part two", 10.0)]
    report.beside += [("part three", 7.6)]
    report.elapsed = 12.4
    text = report.write().read_text(encoding="utf-8")
    assert re.findall(r'<li><a href="#(s\d)">(.*?)</a></li>', text) == [
        ("s0", "First"), ("s1", "Second &amp; last")]  # fmt: skip
    assert re.findall(r'<section id="(s\d)"><h2>(.*?)</h2>', text) == [
        ("s0", "First"), ("s1", "Second &amp; last")]  # fmt: skip
    assert "<p>the <em>first</em></p>" in text  # a section's text is HTML
    assert '<td class="num">0.125</td>' in text and text.count("data:image/png;base64,") == 1
    assert 'srcdoc="&lt;p&gt;inside&lt;/p&gt;"' in text and 'height="640"' in text
    assert re.search(r"It took 12 s: part one 3 s, part two 10 s\. Meanwhile, in a second "
                     r"process: part three 8 s\.</footer>", text)  # fmt: skip

"""The gallery's page: its sections in order behind a table of contents, their tables, figures
and embedded pages, and a footer with the time each part took."""

import re

from PIL import Image

from pushforward.gallery import Report, Section


def _png(path, colour=(255, 0, 0)):
    Image.new("RGB", (4, 3), colour).save(path)
    return path


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

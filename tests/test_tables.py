"""The one table formatter: Markdown tables, CSV text and cells as each caller spells them."""

from cifarlab.tables import acc2, csv_text, fmt, fmt_stat, fmt_value, md_lines, md_table


def test_cells_follow_the_callers_conventions():
    assert [fmt(v) for v in (None, True, 0.012345, 3, "x")] == ["-", "True", "0.01235", "3", "x"]
    assert fmt(None, none="n/a") == "n/a" and fmt(False, true="yes", false="") == ""
    assert fmt(98.6123, number=acc2) == "98.61" and fmt(0.012567, number=acc2) == "0.0126"
    assert fmt_value([None, True, 0.5, {"a": 1}]) == "[none, true, 0.5, {a: 1}]" and fmt_value(float("nan")) == "nan"
    assert (
        fmt_stat("test_acc", (0.91234, 0.0123)) == "91.23 ± 1.23" and fmt_stat("train_seconds", (12.34, None)) == "12.3"
    )
    assert fmt_stat("loss", (0.123456, 0.01)) == "0.1235 ± 0.01" and fmt_stat("loss", None) == "-"


def test_markdown_and_csv():
    rows = [{"a": 1, "b": 0.5}, {"a": 2}]
    assert md_table(rows, ["a", "b"], ["A", "B"]) == ["| A | B |", "|---|---|", "| 1 | 0.5 |", "| 2 | - |"]
    assert md_lines(["x", "n"], [["r", "1"]], ["---", "---:"]) == ["| x | n |", "|---|---:|", "| r | 1 |"]
    assert csv_text(rows) == "a,b\n1,0.5\n2,\n"
    assert csv_text([{"a": 1, "b": None, "c": "x,y"}], ["a", "c"]) == 'a,c\n1,"x,y"\n'


def test_scorecard_cells_and_the_seed_spread():
    from cifarlab.tables import fmt_stat, within_spread

    assert fmt_stat("params", (176402.0, 0.0)) == "176,402" and fmt_stat("macs_per_image", (5.6e8, None)) == "0.56 G"
    assert (
        fmt_stat("images_per_s", (1234.4, 10.0)) == "1,234 ± 10"
        and fmt_stat("peak_memory_mb", (1159.9, None)) == "1,160"
    )
    # within the larger of the two stds; a single seed (no std) is never marked
    assert within_spread((0.90, 0.01), (0.905, 0.002)) and not within_spread((0.90, 0.01), (0.93, 0.02))
    assert not within_spread((0.90, None), (0.90, 0.01))

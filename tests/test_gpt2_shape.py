"""The built-in `gpt2-6l`: the field notes' 6-layer shape, with a real tokenizer."""

import converter
from converter.models import gpt2_shape


def test_gpt2_6l_has_the_field_notes_shape_and_a_lossless_tokenizer(tmp_path):
    loaded = converter.load_model(gpt2_shape.GPT2_6L, build_dir=tmp_path)
    backbone = loaded.model.backbone if hasattr(loaded.model, "backbone") else loaded.model
    assert (backbone.num_layers, backbone.hidden_dim, backbone.vocabulary_size) == (6, 384, 8000)
    assert 13.7e6 < backbone.count_params() < 13.9e6
    text = "def f(x):\n    return x  # café\n"
    ids = loaded.tokenizer.tokenize(text)
    assert int(max(ids)) < gpt2_shape.TOKENIZER_PIECES
    assert loaded.tokenizer.detokenize(ids) == text
    # A second call reuses the preset instead of building it again.
    assert gpt2_shape.build_gpt2_6l(build_dir=tmp_path) == gpt2_shape.gpt2_6l_preset_dir(tmp_path)


def test_android_export_takes_the_tokenizer_of_the_builtin_it_was_asked_for(tmp_path):
    from converter import models

    tokenizer = models.load_tokenizer(gpt2_shape.GPT2_6L, build_dir=str(tmp_path))
    assert tokenizer.vocabulary_size() == gpt2_shape.TOKENIZER_PIECES
    # Only gpt2-6l was built: no other built-in model's preset stood in for it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [gpt2_shape.GPT2_6L]

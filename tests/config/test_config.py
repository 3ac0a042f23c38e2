"""The config floor: YAML and validation errors name the file and the key path (through tagged unions and
mappings), unknown keys list the valid ones, and the tokenizer registry resolves every kind."""

from __future__ import annotations

import pytest

from expmatrix.config import KINDS, SpecError, fit_signature, load_experiment, load_preset


def preset_error(tmp_path, text: str) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_preset(str(path))
    return str(e.value)


def test_yaml_syntax_and_top_level_errors_name_the_file(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("name: x\nfactors: [a\n")
    with pytest.raises(SpecError, match=r"(?s)exp.yaml: invalid YAML: .*line 2, column 10"):
        load_experiment(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(SpecError, match=r"exp.yaml: expected a mapping at the top level, got list"):
        load_experiment(bad)
    with pytest.raises(SpecError, match=r"missing.yaml: file not found"):
        load_experiment(tmp_path / "missing.yaml")


def test_unknown_keys_list_the_valid_ones_at_their_key_path(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\nreport: {metrc: test.auroc}\n")
    with pytest.raises(SpecError, match=r"exp.yaml: report.metrc: unknown key; valid keys: baseline, bootstrap, "):
        load_experiment(exp)
    msg = preset_error(tmp_path, "kind: binned\nrules: {phi: {kind: cyclic, widht: 1.0}}\n")
    assert msg.endswith("p.yaml: rules.phi.widht: unknown key; valid keys: bins, kind, range, width")  # no tag
    msg = preset_error(tmp_path, "kind: vqvae\ncodebook: 512\n")
    assert "p.yaml: codebook: unknown key; valid keys: batch_size, code_dim, codebook_size, commitment_weight" in msg


def test_values_are_checked_where_they_are_set(tmp_path):
    assert preset_error(tmp_path, "kind: binned\nrules: {pT: {kind: quantile, bins: 1}}\n").endswith(
        "p.yaml: rules.pT.bins: Input should be greater than or equal to 2, got 1"
    )
    assert "p.yaml: kind: Input tag 'vq' found using 'kind' does not match any of the expected tags" in preset_error(
        tmp_path, "kind: vq\n"
    )
    msg = preset_error(tmp_path, "kind: fsq\nlevels: [8, 2]\n")
    assert msg.endswith("p.yaml: levels: Value error, expected a non-empty list of integers >= 3, got [8, 2]")


def test_the_registry_resolves_every_kind_to_its_implementation():
    from expmatrix.tokenizers import Tokenizer, implementation

    assert sorted(KINDS) == ["binned", "direct", "factorized", "fsq", "integer", "kmeans", "vqvae"]
    for kind, entry in KINDS.items():
        assert entry.config.model_fields["kind"].annotation.__args__ == (kind,)
        assert issubclass(implementation(kind), Tokenizer)


def test_a_tokenizer_signature_is_the_config_fit_signature():
    from expmatrix.tokenizers import build_tokenizer

    config = load_preset("direct", "tokenizers")
    tok = build_tokenizer(config, ("pT", "eta", "phi"), True)
    assert tok.signature() == fit_signature(config, ("pT", "eta", "phi"), True)
    assert fit_signature(config, ("pT", "eta", "phi"), False) != tok.signature()

"""`hf-hope convert-gguf`: flags reach the converter, user errors end without a traceback."""

import pytest
import torch

from hf_hope.cli import convert_gguf as command
from hf_hope.cli import main


def test_cli_convert_gguf_calls_the_converter(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(command, "convert_gguf", lambda *args, **kwargs: calls.append((args, kwargs)) or args[1])
    main(["convert-gguf", "--gguf_file", "m.gguf", "--output_dir", str(tmp_path), "--dtype", "float16"])
    assert [(str(args[0]), kwargs) for args, kwargs in calls] == [
        ("m.gguf", {"dtype": torch.float16, "overwrite": False})
    ]
    assert str(tmp_path) in capsys.readouterr().out


def test_cli_convert_gguf_reports_user_errors_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["convert-gguf", "--gguf_file", str(tmp_path / "absent.gguf"), "--output_dir", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert raised.value.code == 1 and error.count("\n") == 1
    assert error.startswith("hf-hope convert-gguf: error: ") and "GGUF file not found" in error

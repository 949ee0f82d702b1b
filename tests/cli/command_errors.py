"""How a test reads an `hf-hope` error: one line on stderr, no traceback, and the expected exit status."""

import pytest

from hf_hope.cli import main


def fail(argv, capsys, status: int = 2) -> str:
    """The error `main(argv)` reports: one line on stderr, no traceback, and exit `status` (2: a bad setting)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        main(argv)
    error = capsys.readouterr().err
    assert raised.value.code == status, (raised.value.code, error)
    assert error.count("\n") == 1 and error.endswith("\n") and "Traceback" not in error, error
    assert error.startswith(f"hf-hope {argv[0]}: error: "), error
    return error

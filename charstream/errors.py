"""The exceptions charstream raises for problems a user can cause and fix."""


class CharstreamError(Exception):
    """A problem with the user's input, files or options; its message is one line."""


class ModelFileError(CharstreamError):
    """A model file that is missing, unreadable, corrupt, foreign or from a newer version."""


class NonFiniteError(CharstreamError):
    """Training produced a loss or parameter that is NaN or infinite."""


class SourceFailed(CharstreamError):
    """A source that could not be opened or broke while it was read (a refused or dropped
    connection, a failing plugin, a read error): the text before it is good, so what was trained
    from it is kept (unlike input refused as binary)."""


def one_line(e):
    """`TypeName: first line of the message` (just the type name when there is no message)."""
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class CharstreamWarning(UserWarning):
    """Input that can still be used, after a documented repair (e.g. invalid UTF-8 replaced)."""

"""Errors meant for the user: each names the file (or layer) and what is wrong with it."""


class InputError(ValueError):
    """Bad user input: unreadable file, wrong shape, NaNs, size mismatch, absent class...

    The CLI prints it as one line and the widgets as a napari notification, so the message
    must stand on its own: say which file and what is wrong.
    """

"""Helpers shared by the credentials blocks."""

from __future__ import annotations

from pydantic import SecretStr


def empty_fields(block: object, *names: str) -> list[str]:
    """The names among ``names`` whose field on ``block`` is unset or blank, in the order given.

    Args:
        block: A credentials block.
        names: The fields its current auth mode needs.

    Returns:
        The names whose value is ``None`` or only white space (a :class:`SecretStr` is read for this);
        never the values themselves.
    """
    return [name for name in names if not _present(getattr(block, name))]


def _present(value: str | SecretStr | None) -> bool:
    if value is None:
        return False
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value().strip())
    return bool(value.strip())

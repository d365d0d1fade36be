"""What a reload changed, in the admin's terms: the settings' names, old -> new.

A reload log that says only "applied" leaves an admin to diff files by hand
to learn whether ``max_connections`` or ``allow_foreign_addresses`` moved.
Accounts are the exception: they are named (added, removed, changed), never
shown, since they hold password hashes.
"""

from __future__ import annotations

from pydantic import BaseModel

from ketch.config import ServerConfig

__all__ = ["changed_settings", "shown_setting"]


def changed_settings(old: ServerConfig, new: ServerConfig) -> list[str]:
    """One ``name old -> new`` per changed setting (tables' keys dotted), then accounts."""
    changes: list[str] = []
    for name in type(new).model_fields:
        if name == "users":
            continue
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if isinstance(after, BaseModel) and isinstance(before, BaseModel):
            changes += [f"{name}.{change}" for change in _model_changes(before, after)]
        else:
            changes.append(f"{name} {shown_setting(before)} -> {shown_setting(after)}")
    return changes + _anonymous_default_change(old, new) + _account_changes(old, new)


def _anonymous_default_change(old: ServerConfig, new: ServerConfig) -> list[str]:
    """Anonymous access turned on or off with [anonymous] enabled left out, by accounts
    coming or going: no key changed, so it would go unnamed."""
    before, after = old.anonymous_enabled(), new.anonymous_enabled()
    if before == after or old.anonymous.enabled is not None or new.anonymous.enabled is not None:
        return []
    if after:
        return ["anonymous off -> on (by default, as no accounts are configured now)"]
    return ["anonymous on -> off (by default, as accounts are now configured)"]


def _model_changes(old: BaseModel, new: BaseModel) -> list[str]:
    """A table's changed keys ([anonymous] enabled, say)."""
    return [
        f"{name} {shown_setting(getattr(old, name))} -> {shown_setting(getattr(new, name))}"
        for name in type(new).model_fields
        if getattr(old, name) != getattr(new, name)
    ]


def _account_changes(old: ServerConfig, new: ServerConfig) -> list[str]:
    """Accounts by name only: their entries hold password hashes."""
    before = {user.name: user for user in old.users}
    after = {user.name: user for user in new.users}
    groups = (
        ("users added", [name for name in after if name not in before]),
        ("users removed", [name for name in before if name not in after]),
        (
            "users changed",
            [name for name in after if name in before and after[name] != before[name]],
        ),
    )
    return [f"{label}: {', '.join(names)}" for label, names in groups if names]


def shown_setting(value: object) -> str:
    """A value as the TOML file has it (true, not True), so it can be found there."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)

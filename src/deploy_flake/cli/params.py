"""How the command line's options are read: their checks and conversions (callbacks), and
the groups that hand a command its options as one typed value.

A group's value is made by its dataclass (command_options.CommonOptions, ...), imported
only when a command runs, so `--help` and bad usage stay quick.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from deploy_flake.durations import parse_whole_seconds
from deploy_flake.errors import UsageError
from deploy_flake.models import EXIT_USAGE, Elevate
from deploy_flake.output import messages

if TYPE_CHECKING:
    from deploy_flake import command_options

F = TypeVar("F", bound=Callable[..., Any])


def group(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """The decorators as one, in the order given (the first one's option comes first)."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def collected(
    into: str, make: Callable[..., object], *decorators: Callable[[F], F], also: tuple[str, ...] = ()
) -> Callable[[F], F]:
    """The decorators as one group whose values reach the command as `into=make(**values)`
    (the options' own names, and `also`: parameters declared apart, such as the
    destinations, whose place in `--help` is elsewhere)."""

    def probe() -> None: ...

    group(*decorators)(probe)  # type: ignore[arg-type]
    names = (*(p.name for p in getattr(probe, "__click_params__", ()) if p.name), *also)

    def apply(f: F) -> F:
        @functools.wraps(f)
        def collecting(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return f(**kwargs, **{into: make(**values)})

        return group(*decorators)(collecting)  # type: ignore[arg-type]

    return apply


def _options() -> Any:
    from deploy_flake import command_options

    return command_options


def run_or_skip(ctx: click.Context, param: click.Parameter, value: str) -> bool:
    return value == "run"


def elevation(ctx: click.Context, param: click.Parameter, value: str) -> Elevate:
    return Elevate(value)


def seconds(ctx: click.Context, param: click.Parameter, value: str, minimum: int) -> int:
    try:
        return parse_whole_seconds(value, minimum=minimum)
    except UsageError as e:
        messages.error(f"{param.opts[0]} {e}")
        ctx.exit(EXIT_USAGE)


def timeout(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A stage timeout: whole seconds, at least 1 (on the host, `timeout 0` means no limit)."""
    return seconds(ctx, param, value, 1)


def settle(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """The settle time: whole seconds, 0 for none."""
    return seconds(ctx, param, value, 0)


def relative_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (
        not value or value.startswith("/") or ".." in value.split("/") or any(c in value for c in "\n\0")
    ):
        raise click.BadParameter(f"{value!r} must be a path relative to the new system's top level")
    return value


def specialisation(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A specialisation's name (<toplevel>/specialisation/NAME), or "" for the system itself."""
    if value and (value in (".", "..") or any(c in value for c in "/\n\0") or not value.isprintable()):
        raise click.BadParameter(f"{value!r} is not a specialisation's name")
    return value


def common_options(**values: Any) -> command_options.CommonOptions:
    return _options().CommonOptions(**values)  # type: ignore[no-any-return]


def activation_options(**values: Any) -> command_options.ActivationOptions:
    return _options().ActivationOptions(**values)  # type: ignore[no-any-return]


def build_options(**values: Any) -> command_options.BuildOptions:
    return _options().BuildOptions(**values)  # type: ignore[no-any-return]


def reboot_options(**values: Any) -> command_options.RebootOptions:
    return _options().RebootOptions(**values)  # type: ignore[no-any-return]


def rollout_options(**values: Any) -> command_options.RolloutOptions:
    return _options().RolloutOptions(**values)  # type: ignore[no-any-return]


def gc_options(**values: Any) -> command_options.GcOptions:
    return _options().GcOptions(**values)  # type: ignore[no-any-return]


def positive_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A duration of at least a second, or None when not given."""
    return None if value is None else seconds(ctx, param, value, 1)

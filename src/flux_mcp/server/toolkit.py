"""How this server's tools are declared: what they are (annotations), their descriptions, and a tool
whose parameters are one arguments model of `arguments.py`.

MCPServer derives a tool's input schema from its function's signature, and validates each call with a
model it builds from that signature. `model_tool` gives the SDK a function whose signature is made from
the arguments model (its fields' own annotations and defaults, so the published schema is the one the
model's fields describe), and has each call validated once, by the arguments model itself: field and
model validators included, before any resolver or the tool body runs. The body gets the validated
model. A call the model refuses is answered with the tool result `Invalid arguments for <tool>: ...`,
which names each problem and what would be accepted (`explain_validation_error`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata, func_metadata
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, ValidationError, WithJsonSchema
from pydantic.fields import FieldInfo

from flux_mcp.domain.arguments import TOOL_ARGUMENTS, explain_validation_error
from flux_mcp.domain.errors import HistoryUnavailableError
from flux_mcp.server.render import error_result

BILLED = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)
LOOKUP = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)
# In each job tool's description too: several frameworks pass the tools to their model, not the instructions.
TIMEOUT_ADVICE = (
    "If a call times out on your side, the job may still be running: call it again with the same "
    "arguments (that continues the same task, it is not billed twice) or use list_tasks; never change "
    "the prompt just to retry."
)

F = TypeVar("F", bound=Callable[..., Any])
ToolBody = Callable[..., Awaitable[CallToolResult]]  # (validated arguments, ctx, resolved...) -> result
_VALIDATED = "_validated"  # where the validated model rides among the keyword arguments (no field's name)


def described(fn: F) -> F:
    """Tool descriptions come from docstrings: without their source indentation."""
    fn.__doc__ = inspect.cleandoc(fn.__doc__ or "")
    return fn


def described_with_timeout_advice(fn: F) -> F:
    fn.__doc__ = inspect.cleandoc(fn.__doc__ or "") + "\n\n" + TIMEOUT_ADVICE
    return fn


def model_tool(
    name: str,
    body: ToolBody,
    *,
    title: str,
    annotations: ToolAnnotations,
    meta: dict[str, Any] | None = None,
) -> Tool:
    """The tool `name`, with the fields of its arguments model (`TOOL_ARGUMENTS[name]`) as parameters.

    `body(validated, ...)` runs it: its first parameter receives the validated model, its others (the
    SDK's `Context`, resolved parameters such as the client's roots) are given as to any tool. The
    tool is given to `MCPServer(tools=[...])`: `MCPServer.tool` registers functions only.
    """
    arguments = TOOL_ARGUMENTS[name]
    function = _sdk_function(arguments, body)
    # The output schema is the SDK's own, derived once per return type (five tools return a TaskResult).
    tool = _ModelTool.from_function(
        function, name=name, title=title, annotations=annotations, meta=meta, structured_output=False
    )
    output = _output_metadata(typing.get_type_hints(function, include_extras=True)["return"])
    tool.fn_metadata = _ModelArguments(
        arg_model=tool.fn_metadata.arg_model,
        output_schema=output.output_schema,
        output_model=output.output_model,
        wrap_output=output.wrap_output,
        arguments=arguments,
    )
    return tool


def function_tool(fn: Callable[..., Any], **registration: Any) -> Tool:
    """A tool made from a function's signature, as `MCPServer.tool` makes it (for tools without a model)."""
    return _FluxTool.from_function(fn, **registration)


def _sdk_function(arguments: type[BaseModel], body: ToolBody) -> ToolBody:
    """A function with the model's fields as keyword parameters, then the body's own injected ones."""
    hints = typing.get_type_hints(arguments, include_extras=True)
    fields = [
        inspect.Parameter(
            field_name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_default(field),
            annotation=hints[field_name],
        )
        for field_name, field in arguments.model_fields.items()
    ]
    body_hints = typing.get_type_hints(body, include_extras=True)
    injected = [
        parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=body_hints[parameter.name])
        for parameter in list(inspect.signature(body).parameters.values())[1:]
    ]
    injected_names = [parameter.name for parameter in injected]

    async def call(**kwargs: Any) -> CallToolResult:
        return await body(kwargs[_VALIDATED], **{key: kwargs[key] for key in injected_names})

    parameters: Sequence[inspect.Parameter] = [*fields, *injected]
    call.__name__ = call.__qualname__ = body.__name__
    call.__doc__ = body.__doc__
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=body_hints["return"]
    )
    call.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    call.__annotations__["return"] = body_hints["return"]
    return call


@functools.cache
def _output_metadata(returns: Any) -> FuncMetadata:
    """What the SDK derives from a tool function returning `returns`: its output schema and model."""

    def returning() -> None: ...

    returning.__annotations__ = {"return": returns}
    return func_metadata(returning)


def _default(field: FieldInfo) -> Any:
    return inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)


class _ModelArguments(FuncMetadata):
    """The SDK's record of a tool's arguments, validated by the tool's arguments model instead."""

    arguments: Annotated[type[BaseModel], WithJsonSchema(None)]

    def validate_arguments(self, arguments_to_validate: dict[str, Any]) -> dict[str, Any]:
        # The arguments as the client sent them: JSON strings are not decoded into lists first (the
        # SDK's pre-parsing), so `["a"]` sent as a string is refused as a string, as the schema says.
        validated = self.arguments.model_validate(arguments_to_validate)
        fields = {name: getattr(validated, name) for name in type(validated).model_fields}
        return fields | {_VALIDATED: validated}  # the fields by name for resolvers, the model for the body


class _FluxTool(Tool):
    """A tool whose failures meant for the caller (the history unreachable) read as the SDK's tool errors.

    flux-mcp's errors are its own, not the SDK's (the layers below the server know nothing of MCP); here, at
    the edge, the one that may escape a tool body is given the SDK's `ToolError` wording, so the caller is
    told why, not "Error executing tool" alone.
    """

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> Any:
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as exc:
            return self.answer_failure(exc)

    def answer_failure(self, exc: ToolError) -> Any:
        """What the caller is told when the SDK reports `exc`: re-raised, reworded, or a result."""
        cause = exc.__cause__
        if isinstance(exc, UnexpectedToolError) and isinstance(cause, HistoryUnavailableError):
            raise ToolError(f"Error executing tool {self.name}: {cause}") from cause
        raise exc


class _ModelTool(_FluxTool):
    """A tool whose refused arguments are a tool result naming each problem, not pydantic's report."""

    def answer_failure(self, exc: ToolError) -> Any:
        refused = exc.__cause__
        # Only the arguments' validation ends in a ToolError caused by a ValidationError; a crash of the
        # body is an UnexpectedToolError whatever caused it.
        if isinstance(exc, UnexpectedToolError) or not isinstance(refused, ValidationError):
            return super().answer_failure(exc)
        return error_result(explain_validation_error(self.name, refused))

"""Input events of the contract (SPEC section 2) as strict pydantic models.

`occurred_at` is validated as RFC 3339 with an offset and carried as epoch seconds,
which is what every KPI rule computes with.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from models.timestamps import format_rfc3339, parse_rfc3339

Channel = Literal["phone", "chat", "email", "messaging", "web", "social"]
Priority = Literal["low", "normal", "high", "urgent"]
CHANNELS: tuple[str, ...] = ("phone", "chat", "email", "messaging", "web", "social")
PRIORITIES: tuple[str, ...] = ("urgent", "high", "normal", "low")

QueueName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# agent_id / customer_id: "optional (string)" in the SPEC, with no length rule.
OptionalId = str | None
Seconds = Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)]


def _timestamp(value: Any) -> Any:
    # Strings only: a number here would be a different contract.
    if isinstance(value, str):
        return parse_rfc3339(value)
    raise ValueError("occurred_at must be an RFC 3339 string")


def _default_priority(value: Any) -> Any:
    # null means "not given", like an absent field.
    return "normal" if value is None else value


EventTime = Annotated[
    float,
    BeforeValidator(_timestamp),
    PlainSerializer(format_rfc3339, return_type=str, when_used="json"),
    Field(json_schema_extra={"type": "string", "format": "date-time"}),
]

TICKET_TYPES = frozenset(
    {
        "ticket.created",
        "ticket.agent_replied",
        "ticket.handled",
        "ticket.abandoned",
        "ticket.resolved",
        "ticket.reopened",
    }
)
SURVEY_TYPES = frozenset({"survey.responded"})


class Envelope(BaseModel):
    """The fields every input event carries."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    schema_version: Literal[1]
    event_id: Identifier
    type: str
    occurred_at: EventTime
    ticket_id: Identifier


class TicketCreated(Envelope):
    """The contact arrives: call queued, chat requested, email received."""

    type: Literal["ticket.created"]
    queue: QueueName
    channel: Channel
    priority: Annotated[
        Priority,
        BeforeValidator(_default_priority),
        # null is accepted ("not given"), so the published schema must allow it too.
        WithJsonSchema(
            {"anyOf": [{"enum": list(get_args(Priority)), "type": "string"}, {"type": "null"}]}
        ),
    ] = "normal"
    customer_id: OptionalId = None


class AgentReplied(Envelope):
    """An agent touch; the earliest one is the first response."""

    type: Literal["ticket.agent_replied"]
    agent_id: OptionalId = None


class Handled(Envelope):
    """One completed handling session of an agent."""

    type: Literal["ticket.handled"]
    talk_seconds: Seconds
    hold_seconds: Seconds
    wrap_seconds: Seconds
    agent_id: OptionalId = None

    @property
    def handle_seconds(self) -> float:
        return self.talk_seconds + self.hold_seconds + self.wrap_seconds


class Abandoned(Envelope):
    """The customer left before being served."""

    type: Literal["ticket.abandoned"]


class Resolved(Envelope):
    """The ticket was solved."""

    type: Literal["ticket.resolved"]
    agent_id: OptionalId = None


class Reopened(Envelope):
    """The customer came back on the same issue after a resolution."""

    type: Literal["ticket.reopened"]


_SCALES = {"csat": (3, 5, 7, 10), "nps": (10,), "ces": (7,)}
_DEFAULT_SCALE = {"csat": 5, "nps": 10, "ces": 7}


class SurveyResponded(Envelope):
    """A customer's survey answer about a ticket."""

    type: Literal["survey.responded"]
    metric: Literal["csat", "nps", "ces"]
    score: int
    scale_max: int | None = None
    # Personal data: never a metric label, never logged above DEBUG.
    comment: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None, repr=False
    )
    queue: QueueName | None = None
    channel: Channel | None = None
    agent_id: OptionalId = None

    @model_validator(mode="after")
    def _score_on_scale(self) -> SurveyResponded:
        scale = self.scale_max if self.scale_max is not None else _DEFAULT_SCALE[self.metric]
        if scale not in _SCALES[self.metric]:
            raise ValueError(f"scale_max {scale} not allowed for {self.metric}")
        low = 0 if self.metric == "nps" else 1
        if not low <= self.score <= scale:
            raise ValueError(f"{self.metric} score {self.score} outside {low}..{scale}")
        if self.scale_max is None:
            object.__setattr__(self, "scale_max", scale)
        return self

    @property
    def scale(self) -> int:
        return self.scale_max if self.scale_max is not None else _DEFAULT_SCALE[self.metric]


TicketEvent = TicketCreated | AgentReplied | Handled | Abandoned | Resolved | Reopened
InputEvent = Annotated[TicketEvent | SurveyResponded, Field(discriminator="type")]

MODEL_BY_TYPE: dict[str, type[Envelope]] = {
    "ticket.created": TicketCreated,
    "ticket.agent_replied": AgentReplied,
    "ticket.handled": Handled,
    "ticket.abandoned": Abandoned,
    "ticket.resolved": Resolved,
    "ticket.reopened": Reopened,
    "survey.responded": SurveyResponded,
}

input_event_adapter: TypeAdapter[TicketEvent | SurveyResponded] = TypeAdapter(InputEvent)

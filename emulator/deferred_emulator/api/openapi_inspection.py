"""OpenAPI schemas of the inspection, routing and console endpoints (what the console and the CLI read)."""

from __future__ import annotations

from .openapi_schemas import STRING_MAP, TIMESTAMP, Schema, ref

STATE: Schema = {"type": "string", "enum": ["WAITING", "RUNNING", "FAILED"]}
LAST_ATTEMPT: Schema = {
    "type": "object",
    "properties": {
        "dispatchTime": TIMESTAMP,
        "status": {"type": "integer", "description": "HTTP status; 0: no answer (refused, reset, deadline)."},
        "retryReason": {"type": "string"},
        "responseExcerpt": {"type": "string"},
    },
}
COUNTERS = ("retryCount", "executionCount", "dispatchCount", "responseCount")

INSPECTION_SCHEMAS: dict[str, Schema] = {
    "TaskSummary": {
        "type": "object",
        "required": ["name", "queue", "state", "scheduleTime"],
        "properties": {
            "name": {"type": "string"},
            "queue": {"type": "string"},
            "state": STATE,
            "due": {"type": "boolean", "description": "Waiting and its schedule time has come."},
            "scheduleTime": TIMESTAMP,
            "createTime": TIMESTAMP,
            "method": {"type": "string"},
            "url": {"type": "string"},
            "target": {"type": "string", "enum": ["appengine", "http"]},
            "service": {"type": "string"},
            "callable": {"type": "string", "description": "What a deferred task calls (read, never unpickled)."},
            "argsSummary": {"type": "string", "description": "Its arguments in short."},
            "entityKey": {"type": "string", "description": "The call is stored apart, in this entity."},
            "size": {"type": "integer", "description": "Body bytes."},
            **{name: {"type": "integer"} for name in COUNTERS},
            "lastAttempt": LAST_ATTEMPT,
        },
    },
    "TaskDetail": {
        "allOf": [
            ref("TaskSummary"),
            {"type": "object", "properties": {"resource": ref("Task")}},
        ]
    },
    "TaskPage": {
        "type": "object",
        "properties": {
            "queue": {"type": "string"},
            "now": TIMESTAMP,
            "tasks": {"type": "array", "items": ref("TaskSummary")},
            "nextPageToken": {"type": "string"},
        },
    },
    "FailedTaskPage": {
        "type": "object",
        "properties": {
            "queue": {"type": "string"},
            "now": TIMESTAMP,
            "tasks": {
                "type": "array",
                "items": {
                    "allOf": [
                        ref("TaskSummary"),
                        {
                            "type": "object",
                            "properties": {"attempts": {"type": "array", "items": ref("AttemptRecord")}},
                        },
                    ]
                },
            },
            "nextPageToken": {"type": "string"},
        },
    },
    "AttemptRecord": {
        "type": "object",
        "properties": {
            "number": {"type": "integer"},
            "scheduleTime": TIMESTAMP,
            "dispatchTime": TIMESTAMP,
            "responseTime": TIMESTAMP,
            "status": {"type": "integer"},
            "latencyMs": {"type": "number"},
            "retryReason": {"type": "string"},
            "responseExcerpt": {"type": "string", "description": "The answer's first KiB."},
            "response": {"type": "string", "description": "The app's whole answer, up to 64 KiB."},
            "responseTruncated": {
                "type": "boolean",
                "description": "There is more than shown: the answer was longer than 64 KiB (or, without"
                " `response`, than the excerpt's KiB).",
            },
        },
    },
    "TaskAttempts": {
        "type": "object",
        "properties": {
            "queue": {"type": "string"},
            "task": {"type": "string"},
            "attempts": {"type": "array", "items": ref("AttemptRecord")},
        },
    },
    "TaskPayload": {
        "type": "object",
        "description": "A description of the body; deferred pickles are read as opcodes, never unpickled.",
        "properties": {
            "queue": {"type": "string"},
            "task": {"type": "string"},
            "contentType": {"type": "string"},
            "size": {"type": "integer"},
            "format": {"type": "string", "enum": ["empty", "deferred", "pickle", "text", "bytes"]},
            "call": {"type": "string", "description": "The deferred call as Python would print it."},
            "globals": {"type": "array", "items": {"type": "string"}},
            "excerpt": {"type": "string"},
            "truncated": {"type": "boolean"},
            "entityKey": {"type": "string", "description": "The payload is stored apart (a large deferred call)."},
            "entity": {"type": "object", "description": "The stored payload, described the same way."},
        },
        "additionalProperties": True,
    },
    "RetryFailedRequest": {
        "type": "object",
        "description": "No field: every failed task of the queue.",
        "properties": {"task": {"type": "string"}, "tasks": {"type": "array", "items": {"type": "string"}}},
    },
    "RetryFailedResponse": {"type": "object", "properties": {"retried": {"type": "integer"}}},
    "EntityList": {
        "type": "object",
        "properties": {
            "entities": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string"},
                        "size": {"type": "integer"},
                        "createTime": TIMESTAMP,
                        "taskId": {"type": "integer", "nullable": True},
                    },
                },
            }
        },
    },
    "Flow": {
        "type": "object",
        "properties": {
            "now": TIMESTAMP,
            "minutes": {"type": "integer", "description": "Points per series: one a minute, oldest first."},
            "queues": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "description": "Attempts per minute; dispatched = succeeded + retried + failed (gave up).",
                    "properties": {
                        name: {"type": "array", "items": {"type": "integer"}}
                        for name in ("dispatched", "succeeded", "retried", "failed")
                    },
                },
            },
        },
    },
    "RecentAttempts": {
        "type": "object",
        "properties": {
            "now": TIMESTAMP,
            "next": {"type": "integer", "description": "The cursor to ask from next (since=)."},
            "missed": {"type": "integer", "description": "Attempts dropped before this follower saw them."},
            "attempts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "seq": {"type": "integer"},
                        "dispatchTime": TIMESTAMP,
                        "queue": {"type": "string"},
                        "task": {"type": "string"},
                        "number": {"type": "integer"},
                        "status": {"type": "integer", "description": "0: no answer."},
                        "latencyMs": {"type": "number"},
                        "retryReason": {"type": "string"},
                        "outcome": {"type": "string", "enum": ["succeeded", "retry", "failed"]},
                        "method": {"type": "string"},
                        "url": {"type": "string"},
                        "callable": {"type": "string"},
                        "argsSummary": {"type": "string"},
                    },
                },
            },
        },
    },
    "Routing": {
        "type": "object",
        "properties": {
            "appUrl": {"type": "string", "example": "http://127.0.0.1:8080"},
            "targets": {**STRING_MAP, "description": "Base URL per App Engine service."},
        },
    },
}

"""The JSON Schemas of the OpenAPI document: Cloud Tasks resources and the emulator's own bodies."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION: Schema = {"type": "string", "pattern": r"^-?\d+(\.\d{1,9})?s$", "example": "10s"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time", "example": "2030-01-02T03:04:05.123456Z"}
HTTP_METHOD: Schema = {
    "type": "string",
    "enum": ["HTTP_METHOD_UNSPECIFIED", "POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"],
}
VIEW: Schema = {"type": "string", "enum": ["VIEW_UNSPECIFIED", "BASIC", "FULL"]}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "status"],
                "properties": {
                    "code": {"type": "integer"},
                    "message": {"type": "string"},
                    "status": {"type": "string", "example": "INVALID_ARGUMENT"},
                    "details": {
                        "type": "array",
                        "description": "google.rpc error details, e.g. Help links on invalid names.",
                        "items": {"type": "object"},
                    },
                },
            }
        },
    },
    "Empty": {"type": "object"},
    "RetryConfig": {
        "type": "object",
        "properties": {
            "maxAttempts": {"type": "integer", "description": "Attempts in all, the first included; -1: no limit."},
            "maxRetryDuration": DURATION,
            "minBackoff": DURATION,
            "maxBackoff": DURATION,
            "maxDoublings": {"type": "integer", "minimum": 0},
        },
    },
    "RateLimits": {
        "type": "object",
        "properties": {
            "maxDispatchesPerSecond": {"type": "number", "minimum": 0, "maximum": 500},
            "maxBurstSize": {"type": "integer"},
            "maxConcurrentDispatches": {"type": "integer", "minimum": 0, "maximum": 5000},
        },
    },
    "AppEngineRouting": {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("service", "version", "instance", "host")},
    },
    "Queue": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "example": "projects/p/locations/l/queues/my-queue"},
            "state": {"type": "string", "enum": ["STATE_UNSPECIFIED", "RUNNING", "PAUSED", "DISABLED"]},
            "rateLimits": ref("RateLimits"),
            "retryConfig": ref("RetryConfig"),
            "appEngineRoutingOverride": ref("AppEngineRouting"),
            "httpTarget": ref("HttpTarget"),
            "purgeTime": TIMESTAMP,
            "stats": {"type": "object"},
        },
    },
    "ListQueuesResponse": {
        "type": "object",
        "properties": {"queues": {"type": "array", "items": ref("Queue")}, "nextPageToken": {"type": "string"}},
    },
    "AppEngineHttpRequest": {
        "type": "object",
        "properties": {
            "httpMethod": HTTP_METHOD,
            "appEngineRouting": ref("AppEngineRouting"),
            "relativeUri": {"type": "string", "example": "/_ah/queue/deferred"},
            "headers": STRING_MAP,
            "body": {"type": "string", "format": "byte", "description": "base64"},
        },
    },
    "HttpRequest": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "example": "http://localhost:8080/work"},
            "httpMethod": HTTP_METHOD,
            "headers": STRING_MAP,
            "body": {"type": "string", "format": "byte", "description": "base64"},
            "oidcToken": ref("OidcToken"),
            "oauthToken": ref("OAuthToken"),
        },
    },
    "OidcToken": {
        "type": "object",
        "description": "Delivered as Authorization: Bearer <JWT> signed by the emulator's issuer.",
        "properties": {"serviceAccountEmail": {"type": "string"}, "audience": {"type": "string"}},
    },
    "OAuthToken": {
        "type": "object",
        "description": "Delivered as an opaque bearer token (emulator-oauth.<base64url JSON>).",
        "properties": {"serviceAccountEmail": {"type": "string"}, "scope": {"type": "string"}},
    },
    "HttpTarget": {
        "type": "object",
        "description": "Applied to the queue's HTTP tasks at each delivery.",
        "properties": {
            "uriOverride": {
                "type": "object",
                "properties": {
                    "scheme": {"type": "string", "enum": ["SCHEME_UNSPECIFIED", "HTTP", "HTTPS"]},
                    "host": {"type": "string"},
                    "port": {"type": "string", "format": "int64"},
                    "pathOverride": {"type": "object", "properties": {"path": {"type": "string"}}},
                    "queryOverride": {"type": "object", "properties": {"queryParams": {"type": "string"}}},
                    "uriOverrideEnforceMode": {
                        "type": "string",
                        "enum": ["URI_OVERRIDE_ENFORCE_MODE_UNSPECIFIED", "IF_NOT_EXISTS", "ALWAYS"],
                    },
                },
            },
            "httpMethod": HTTP_METHOD,
            "headerOverrides": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "header": {
                            "type": "object",
                            "properties": {"key": {"type": "string"}, "value": {"type": "string"}},
                        }
                    },
                },
            },
            "oidcToken": ref("OidcToken"),
            "oauthToken": ref("OAuthToken"),
        },
    },
    "Attempt": {
        "type": "object",
        "properties": {
            "scheduleTime": TIMESTAMP,
            "dispatchTime": TIMESTAMP,
            "responseTime": TIMESTAMP,
            "responseStatus": {"type": "object"},
        },
    },
    "Task": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "example": "projects/p/locations/l/queues/default/tasks/my-task"},
            "appEngineHttpRequest": ref("AppEngineHttpRequest"),
            "httpRequest": ref("HttpRequest"),
            "scheduleTime": TIMESTAMP,
            "createTime": TIMESTAMP,
            "dispatchDeadline": DURATION,
            "dispatchCount": {"type": "integer"},
            "responseCount": {"type": "integer"},
            "firstAttempt": ref("Attempt"),
            "lastAttempt": ref("Attempt"),
            "view": VIEW,
            "retryConfig": ref("RetryConfig"),
            "state": {"type": "string", "description": "Extension: WAITING, RUNNING or FAILED."},
        },
    },
    "CreateTaskRequest": {
        "type": "object",
        "required": ["task"],
        "properties": {"task": ref("Task"), "responseView": VIEW},
    },
    "ListTasksResponse": {
        "type": "object",
        "properties": {"tasks": {"type": "array", "items": ref("Task")}, "nextPageToken": {"type": "string"}},
    },
    "RunTaskRequest": {"type": "object", "properties": {"responseView": VIEW}},
    "BatchAddRequest": {
        "type": "object",
        "required": ["tasks"],
        "properties": {
            "tasks": {
                "type": "array",
                "maxItems": 100,
                "items": {
                    "type": "object",
                    "properties": {"queue": {"type": "string", "example": "default"}, "task": ref("Task")},
                },
            },
            "responseView": VIEW,
        },
    },
    "BatchAddResponse": {"type": "object", "properties": {"tasks": {"type": "array", "items": ref("Task")}}},
    "EntityKey": {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
    "DrainRequest": {
        "type": "object",
        "properties": {
            "queues": {"type": "array", "items": {"type": "string"}},
            "timeout": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 3600, "default": 10},
        },
    },
    "DrainReport": {
        "type": "object",
        "properties": {
            "dispatched": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "retried": {"type": "integer"},
            "failed": {"type": "integer"},
            "failures": {"type": "array", "items": {"type": "object"}},
            "timedOut": {"type": "boolean"},
        },
    },
    "Clock": {
        "type": "object",
        "properties": {"now": TIMESTAMP, "nowUs": {"type": "integer"}, "virtual": {"type": "boolean"}},
    },
    "ClockAdvanceRequest": {
        "type": "object",
        "required": ["seconds"],
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 400 * 86400}},
    },
    "Health": {
        "type": "object",
        "required": ["ok", "version"],
        "properties": {
            "ok": {"type": "boolean"},
            "version": {"type": "string"},
            "maxTaskSize": {"type": "integer"},
            "virtualClock": {"type": "boolean"},
            "dispatch": {"type": "boolean"},
        },
    },
    "DeliverySecret": {
        "type": "object",
        "required": ["secret"],
        "properties": {"secret": {"type": "string"}},
    },
    "Stats": {
        "type": "object",
        "properties": {"queues": {"type": "array", "items": ref("Queue")}, "now": TIMESTAMP},
    },
    "Location": {"type": "object", "properties": {"name": {"type": "string"}, "locationId": {"type": "string"}}},
    "Policy": {
        "type": "object",
        "properties": {"version": {"type": "integer"}, "bindings": {"type": "array"}, "etag": {"type": "string"}},
    },
    "SetIamPolicyRequest": {"type": "object", "required": ["policy"], "properties": {"policy": ref("Policy")}},
    "TestIamPermissionsRequest": {
        "type": "object",
        "properties": {"permissions": {"type": "array", "items": {"type": "string"}}},
    },
    "TestIamPermissionsResponse": {
        "type": "object",
        "properties": {"permissions": {"type": "array", "items": {"type": "string"}}},
    },
    "ListLocationsResponse": {
        "type": "object",
        "properties": {"locations": {"type": "array", "items": ref("Location")}},
    },
    "BatchCreateTasksRequest": {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "parent": {"type": "string"},
            "requests": {"type": "array", "items": ref("CreateTaskRequest"), "maxItems": 100},
            "requestId": {"type": "string"},
        },
    },
    "BatchDeleteTasksRequest": {
        "type": "object",
        "required": ["names"],
        "properties": {
            "parent": {"type": "string"},
            "names": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
            "requestId": {"type": "string"},
        },
    },
    "Operation": {
        "type": "object",
        "description": "A batch's long-running operation: always done; failed requests are in metadata.failedRequests.",
        "properties": {
            "name": {"type": "string"},
            "done": {"type": "boolean"},
            "metadata": {"type": "object"},
            "response": {"type": "object"},
            "error": {"type": "object"},
        },
    },
    "OpenIdConfiguration": {
        "type": "object",
        "required": ["issuer", "jwks_uri"],
        "properties": {"issuer": {"type": "string"}, "jwks_uri": {"type": "string"}},
    },
    "JwkSet": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}},
    "PemCertificates": {"type": "object", "additionalProperties": {"type": "string"}},
}

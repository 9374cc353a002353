-- Tool calls recorded since $1 per tool and kind: 'injected' (executed by the bridge
-- through MCP), 'provider' (executed by the upstream provider, e.g. web search) or
-- 'client' (returned to the client to execute). errors = injected calls that failed or
-- were not executed (invocation_error set). Most calls first.
-- $1 = start of the period (TIMESTAMPTZ in PostgreSQL, RFC 3339 UTC text in SQLite).
SELECT tool,
       CASE WHEN injected THEN 'injected'
            WHEN provider_executed THEN 'provider'
            ELSE 'client' END                                     AS kind,
       COUNT(*)                                                   AS calls,
       SUM(CASE WHEN invocation_error IS NULL THEN 0 ELSE 1 END)  AS errors
FROM aibridge_tool_usages
WHERE created_at >= $1
GROUP BY 1, 2
ORDER BY calls DESC, tool, kind;

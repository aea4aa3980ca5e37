/// The fleet's schema in PostgreSQL, created and migrated by the daemon (by the first one whose
/// role may; see the README's least-privilege roles). Everything lives in the schema
/// `portcullis`; nodes write only through `publish`, `check_in` and `compact`, functions that run
/// with the owner's rights and take the node's identity from its login role.
enum FleetSchema {
    /// The version this daemon writes and reads; a database at a newer one is refused.
    static let version = 1

    /// The channel `publish` notifies on, with the last sequence it assigned as the payload.
    static let channel = "portcullis_changes"

    /// The statements that take a database from nothing to version 1, in order, in one transaction.
    static let version1: [String] = [
        "CREATE SCHEMA IF NOT EXISTS portcullis",
        """
        CREATE TABLE portcullis.meta (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            version integer NOT NULL,
            -- The change log's counter. Its row is locked by each publisher until it commits, so
            -- sequences are taken in commit order: a reader at cursor N never finds a row below N
            -- committing after it read (a plain bigserial would let one commit late and be skipped).
            last_sequence bigint NOT NULL DEFAULT 0,
            -- Rows below this may be compacted away: a node whose cursor is older takes a snapshot.
            compacted_below bigint NOT NULL DEFAULT 0,
            -- The longest block the log has carried (expiry less the time it was made): compaction
            -- keeps at least this much history, plus a margin.
            longest_expiry interval NOT NULL DEFAULT '0'
        )
        """,
        "INSERT INTO portcullis.meta (version) VALUES (1)",
        """
        CREATE TABLE portcullis.nodes (
            node text PRIMARY KEY CHECK (node ~ '^[A-Za-z0-9._-]{1,64}$'),
            -- The login role that registered the node: only it may publish as the node.
            role name NOT NULL,
            registered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            cursor bigint,
            seen_at timestamptz
        )
        """,
        """
        CREATE TABLE portcullis.changes (
            sequence bigint PRIMARY KEY,
            node text NOT NULL,
            -- The node's own outbox id: a publish repeated after a lost answer is taken once.
            node_id bigint NOT NULL,
            kind text NOT NULL,
            target cidr NOT NULL,
            expires_at timestamptz,
            source text NOT NULL,
            reason text NOT NULL DEFAULT '',
            made_at timestamptz NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            UNIQUE (node, node_id)
        )
        """,
        "CREATE INDEX changes_by_time ON portcullis.changes (committed_at)",
        """
        CREATE TABLE portcullis.in_force (
            target cidr PRIMARY KEY,
            sequence bigint NOT NULL,
            node text NOT NULL,
            expires_at timestamptz,
            source text NOT NULL,
            reason text NOT NULL,
            made_at timestamptz NOT NULL
        )
        """,
        """
        CREATE TABLE portcullis.allowlist (
            target cidr PRIMARY KEY,
            sequence bigint NOT NULL,
            node text NOT NULL,
            made_at timestamptz NOT NULL
        )
        """,
        // The node's changes in its order; returns the last sequence assigned (0: none new).
        // Times travel as Unix milliseconds on the database's clock; an expiry of 0 is "never".
        """
        CREATE FUNCTION portcullis.publish(
            p_node text, p_ids bigint[], p_kinds text[], p_targets cidr[], p_expires_ms bigint[],
            p_sources text[], p_reasons text[], p_made_ms bigint[]
        ) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = portcullis, pg_temp AS $$
        DECLARE
            owner name;
            base bigint;
            fresh bigint;
        BEGIN
            SELECT role INTO owner FROM nodes WHERE node = p_node;
            IF owner IS NULL THEN
                INSERT INTO nodes (node, role) VALUES (p_node, session_user);
            ELSIF owner <> session_user THEN
                RAISE EXCEPTION 'node % is registered to role %, not %', p_node, owner, session_user USING ERRCODE = '42501';
            END IF;
            SELECT last_sequence INTO base FROM meta FOR UPDATE;
            CREATE TEMP TABLE IF NOT EXISTS incoming (
                position bigint, id bigint, kind text, target cidr, expires_at timestamptz, source text, reason text, made_at timestamptz
            ) ON COMMIT DELETE ROWS;
            TRUNCATE incoming;
            -- Numbered 1, 2, ... among the rows not published before, in the node's order.
            INSERT INTO incoming
            SELECT row_number() OVER (ORDER BY u.position), u.id, u.kind, u.target,
                   CASE WHEN u.expires_ms = 0 THEN NULL ELSE to_timestamp(u.expires_ms / 1000.0) END,
                   u.source, u.reason, to_timestamp(u.made_ms / 1000.0)
            FROM unnest(p_ids, p_kinds, p_targets, p_expires_ms, p_sources, p_reasons, p_made_ms)
                 WITH ORDINALITY AS u(id, kind, target, expires_ms, source, reason, made_ms, position)
            WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE c.node = p_node AND c.node_id = u.id);
            SELECT count(*) INTO fresh FROM incoming;
            IF fresh = 0 THEN
                RETURN 0;
            END IF;
            INSERT INTO changes (sequence, node, node_id, kind, target, expires_at, source, reason, made_at)
            SELECT base + position, p_node, id, kind, target, expires_at, source, reason, made_at
            FROM incoming;
            UPDATE meta SET last_sequence = base + fresh,
                -- At most a year: a wild expiry must not keep the whole log forever.
                longest_expiry = least('365 days', greatest(longest_expiry, coalesce(
                    (SELECT max(expires_at - made_at) FROM incoming WHERE expires_at IS NOT NULL), '0')));
            -- What is in force, for new nodes: a target's tombstone in this run removes it, and
            -- the longest of its blocks after the tombstone stands, unless a longer one does.
            DELETE FROM in_force f USING (SELECT DISTINCT target FROM incoming WHERE kind = 'unblock') t
            WHERE f.target = t.target;
            INSERT INTO in_force AS f (target, sequence, node, expires_at, source, reason, made_at)
            SELECT DISTINCT ON (i.target) i.target, base + i.position, p_node, i.expires_at, i.source, i.reason, i.made_at
            FROM incoming i
            LEFT JOIN (SELECT target, max(position) AS position FROM incoming WHERE kind = 'unblock' GROUP BY target) t
                ON t.target = i.target
            WHERE i.kind IN ('block', 'refresh') AND (t.position IS NULL OR i.position > t.position)
            ORDER BY i.target, i.expires_at DESC NULLS FIRST, i.position DESC
            ON CONFLICT (target) DO UPDATE SET sequence = excluded.sequence, node = excluded.node,
                expires_at = excluded.expires_at, source = excluded.source, reason = excluded.reason, made_at = excluded.made_at
            WHERE f.expires_at IS NOT NULL AND (excluded.expires_at IS NULL OR excluded.expires_at > f.expires_at);
            DELETE FROM allowlist a USING (
                SELECT DISTINCT ON (target) target, kind FROM incoming WHERE kind IN ('allow', 'disallow') ORDER BY target, position DESC
            ) l WHERE a.target = l.target AND l.kind = 'disallow';
            INSERT INTO allowlist (target, sequence, node, made_at)
            SELECT l.target, base + l.position, p_node, l.made_at FROM (
                SELECT DISTINCT ON (target) target, kind, position, made_at FROM incoming
                WHERE kind IN ('allow', 'disallow') ORDER BY target, position DESC
            ) l WHERE l.kind = 'allow'
            ON CONFLICT (target) DO NOTHING;
            -- Delivered at commit: a wake-up carrying only the sequence; nodes read the rows.
            PERFORM pg_notify('portcullis_changes', (base + fresh)::text);
            RETURN base + fresh;
        END
        $$
        """,
        // A node says where it is: for `fleet` health across nodes, and to register its name.
        """
        CREATE FUNCTION portcullis.check_in(p_node text, p_cursor bigint) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = portcullis, pg_temp AS $$
        DECLARE
            owner name;
        BEGIN
            SELECT role INTO owner FROM nodes WHERE node = p_node;
            IF owner IS NULL THEN
                INSERT INTO nodes (node, role, cursor, seen_at) VALUES (p_node, session_user, p_cursor, clock_timestamp());
            ELSIF owner <> session_user THEN
                RAISE EXCEPTION 'node % is registered to role %, not %', p_node, owner, session_user USING ERRCODE = '42501';
            ELSE
                UPDATE nodes SET cursor = p_cursor, seen_at = clock_timestamp() WHERE node = p_node;
            END IF;
        END
        $$
        """,
        // Drops the log older than the longest block plus `p_margin`, and what has expired from
        // the in-force table; returns the new compacted_below.
        """
        CREATE FUNCTION portcullis.compact(p_margin interval) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = portcullis, pg_temp AS $$
        DECLARE
            m meta%ROWTYPE;
            below bigint;
        BEGIN
            SELECT * INTO m FROM meta FOR UPDATE;
            SELECT min(sequence) INTO below FROM changes
            WHERE committed_at >= clock_timestamp() - m.longest_expiry - p_margin;
            below := coalesce(below, m.last_sequence + 1);
            IF below > m.compacted_below THEN
                DELETE FROM changes WHERE sequence < below;
                UPDATE meta SET compacted_below = below;
            END IF;
            DELETE FROM in_force WHERE expires_at <= clock_timestamp();
            RETURN greatest(below, m.compacted_below);
        END
        $$
        """,
        "REVOKE ALL ON FUNCTION portcullis.publish(text, bigint[], text[], cidr[], bigint[], text[], text[], bigint[]) FROM PUBLIC",
        "REVOKE ALL ON FUNCTION portcullis.check_in(text, bigint) FROM PUBLIC",
        "REVOKE ALL ON FUNCTION portcullis.compact(interval) FROM PUBLIC",
    ]

    /// The least-privilege group role the nodes' login roles belong to; granted what a node
    /// needs when it exists (an administrator creates it: see the README).
    static let nodeRole = "portcullis_node"

    static let grants: [String] = [
        "GRANT USAGE ON SCHEMA portcullis TO portcullis_node",
        "GRANT SELECT ON portcullis.meta, portcullis.changes, portcullis.in_force, portcullis.allowlist, portcullis.nodes TO portcullis_node",
        "GRANT EXECUTE ON FUNCTION portcullis.publish(text, bigint[], text[], cidr[], bigint[], text[], text[], bigint[]) TO portcullis_node",
        "GRANT EXECUTE ON FUNCTION portcullis.check_in(text, bigint) TO portcullis_node",
        "GRANT EXECUTE ON FUNCTION portcullis.compact(interval) TO portcullis_node",
    ]
}

"""Named, recorded migrations of the PostgreSQL store, applied in order, each exactly once.

The tables mirror the SQLite store's one for one (see `sqlite_schema`), with native types:
instants are `timestamptz` (microseconds, like SQLite's integers), identifiers and names sort
bytewise (`COLLATE "C"`) so keyset paging orders rows exactly as SQLite does.

Presence is kept compact: the machine row holds the current run of continuous presence
(`presence_start` .. `last_seen`); a closed run moves to `presence` only when a gap longer than the
online window ends it. `facts` gets a row only when hostname, os, kind or components change.
`machines` is written by every last-seen flush, so it leaves room on each page (`fillfactor`) for
updates that touch no index (HOT updates): no index covers `last_seen` on purpose.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE clients (
            client_id text COLLATE "C" PRIMARY KEY,
            name text COLLATE "C" NOT NULL UNIQUE,
            created_at timestamptz NOT NULL
        );
        CREATE TABLE enrollment_tokens (
            token_id text COLLATE "C" PRIMARY KEY,
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            token_hash text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz
        );
        CREATE INDEX enrollment_tokens_client ON enrollment_tokens (client_id);
        CREATE TABLE api_tokens (
            token_id text COLLATE "C" PRIMARY KEY,
            name text COLLATE "C" NOT NULL,
            role text NOT NULL,
            token_hash text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz
        );
        CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;
        CREATE TABLE machines (
            machine_id text COLLATE "C" PRIMARY KEY,
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            hardware_id text COLLATE "C" NOT NULL,
            hostname text NOT NULL,
            os text NOT NULL,
            kind text NOT NULL,
            components text NOT NULL,
            first_seen timestamptz NOT NULL,
            presence_start timestamptz NOT NULL,
            last_seen timestamptz NOT NULL,
            offboard_state text,
            offboarded_at timestamptz,
            expired_at timestamptz,
            agent_id text COLLATE "C",
            UNIQUE (client_id, hardware_id)
        ) WITH (fillfactor = 70);
        CREATE INDEX machines_client ON machines (client_id, machine_id);
        CREATE TABLE agents (
            agent_id text COLLATE "C" PRIMARY KEY,
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            token_hash text NOT NULL UNIQUE,
            agent_version text,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz
        );
        CREATE INDEX agents_machine ON agents (machine_id);
        CREATE TABLE revocations (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            token_hash text NOT NULL
        );
        CREATE TABLE coverage (
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            first_seen timestamptz NOT NULL,
            offboarded_at timestamptz,
            PRIMARY KEY (machine_id, first_seen)
        );
        CREATE TABLE presence (
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            start_at timestamptz NOT NULL,
            end_at timestamptz NOT NULL,
            PRIMARY KEY (machine_id, start_at)
        );
        CREATE TABLE facts (
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            valid_from timestamptz NOT NULL,
            hostname text NOT NULL,
            os text NOT NULL,
            kind text NOT NULL,
            components text NOT NULL,
            PRIMARY KEY (machine_id, valid_from)
        );
        CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            target text NOT NULL,
            detail text NOT NULL
        );
        CREATE INDEX audit_target ON audit (target, id);
        CREATE TABLE agent_events (
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            event_id text COLLATE "C" NOT NULL,
            agent_id text NOT NULL,
            at timestamptz NOT NULL,
            received_at timestamptz NOT NULL,
            type text NOT NULL,
            detail text NOT NULL,
            PRIMARY KEY (machine_id, event_id)
        );
        CREATE INDEX agent_events_machine_at ON agent_events (machine_id, at);
        """,
    ),
    (
        "0002_commands",
        """
        ALTER TABLE agents ADD COLUMN command_seq bigint NOT NULL DEFAULT 0;
        CREATE TABLE commands (
            command_id text COLLATE "C" PRIMARY KEY,
            type text NOT NULL,
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            client_id text COLLATE "C" NOT NULL,
            agent_id text COLLATE "C" NOT NULL,
            sequence bigint NOT NULL,
            state text NOT NULL,
            issuer text NOT NULL,
            reason text NOT NULL,
            ticket text,
            created_at timestamptz NOT NULL,
            delivered_at timestamptz,
            delivery_count integer NOT NULL DEFAULT 0,
            completed_at timestamptz,
            result_status text,
            result_reason text,
            steps text,
            rejections integer NOT NULL DEFAULT 0
        );
        CREATE INDEX commands_state ON commands (state, created_at);
        CREATE INDEX commands_machine ON commands (machine_id, created_at);
        -- However many instances take offboard requests, a machine has one pending offboard.
        CREATE UNIQUE INDEX commands_one_pending ON commands (machine_id)
            WHERE state = 'offboard_pending';
        """,
    ),
    (
        "0003_inventory_fast_path",
        """
        -- Since when the machine row's hostname, os, kind and components hold: an inventory as of
        -- any later instant takes them from the row, without looking into `facts`.
        ALTER TABLE machines ADD COLUMN facts_since timestamptz;
        UPDATE machines m SET facts_since = COALESCE(
            (SELECT max(f.valid_from) FROM facts f WHERE f.machine_id = m.machine_id),
            m.first_seen);
        ALTER TABLE machines ALTER COLUMN facts_since SET NOT NULL;
        -- Looking back into runs and coverage periods reads the index alone.
        ALTER TABLE presence DROP CONSTRAINT presence_pkey,
            ADD CONSTRAINT presence_pkey PRIMARY KEY (machine_id, start_at) INCLUDE (end_at);
        ALTER TABLE coverage DROP CONSTRAINT coverage_pkey,
            ADD CONSTRAINT coverage_pkey PRIMARY KEY (machine_id, first_seen)
                INCLUDE (offboarded_at);
        """,
    ),
    (
        "0004_health_progress_skew_kind",
        """
        -- One row the collector rewrites to prove, at start and while idle, that it can write.
        CREATE TABLE store_health (
            id integer PRIMARY KEY,
            written_at timestamptz NOT NULL
        );
        -- What an agent said while a command ran, and its latest refusal (shown to the NOC).
        ALTER TABLE commands ADD COLUMN progress text;
        ALTER TABLE commands ADD COLUMN progress_at timestamptz;
        ALTER TABLE commands ADD COLUMN last_rejection text;
        ALTER TABLE commands ADD COLUMN last_rejected_at timestamptz;
        -- The agent's clock minus the collector's when it last said (milliseconds).
        -- A kind the agent reported that differs from the billed one, until an admin confirms.
        ALTER TABLE machines ADD COLUMN pending_kind text;
        ALTER TABLE machines ADD COLUMN clock_offset_ms integer;
        """,
    ),
    (
        "0005_hardening",
        """
        -- Sequence numbers per machine, so they never go down when it enrolls again.
        ALTER TABLE machines ADD COLUMN command_seq bigint NOT NULL DEFAULT 0;
        UPDATE machines SET command_seq = COALESCE(
            (SELECT MAX(a.command_seq) FROM agents a WHERE a.machine_id = machines.machine_id), 0);
        -- The end of a client's record when its hardware enrolled under another client.
        ALTER TABLE machines ADD COLUMN moved_at timestamptz;
        ALTER TABLE machines ADD COLUMN moved_to_client_id text;
        ALTER TABLE coverage ADD COLUMN moved_at timestamptz;
        ALTER TABLE coverage ADD COLUMN moved_to_client_id text;
        -- A technician's approval for known hardware to enroll again without its credential.
        ALTER TABLE machines ADD COLUMN reenroll_approved_until timestamptz;
        ALTER TABLE machines ADD COLUMN reenroll_approved_by text;
        ALTER TABLE machines ADD COLUMN reenroll_approved_client_id text;
        -- Enrollments of known hardware held until a technician approves (or proof comes).
        CREATE TABLE held_enrollments (
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            hardware_id text NOT NULL,
            hostname text NOT NULL,
            os text NOT NULL,
            kind text NOT NULL,
            address text,
            first_at timestamptz NOT NULL,
            last_at timestamptz NOT NULL,
            attempts bigint NOT NULL DEFAULT 1,
            PRIMARY KEY (machine_id, client_id)
        );
        -- Enrollment tokens may carry a use limit.
        ALTER TABLE enrollment_tokens ADD COLUMN max_uses bigint;
        ALTER TABLE agents ADD COLUMN enrollment_token_id text;
        CREATE INDEX agents_token_created ON agents (enrollment_token_id, created_at);
        ALTER TABLE enrollment_tokens ADD COLUMN uses bigint NOT NULL DEFAULT 0;
        -- API tokens limited to some clients (none listed: every client).
        CREATE TABLE api_token_clients (
            token_id text COLLATE "C" NOT NULL REFERENCES api_tokens (token_id),
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            PRIMARY KEY (token_id, client_id)
        );
        -- The component names an offboard will uninstall, as the machine reported them.
        ALTER TABLE commands ADD COLUMN components text;
        CREATE INDEX commands_created ON commands (created_at);
        -- However many instances take requests, a machine has one open offboard.
        DROP INDEX commands_one_pending;
        CREATE UNIQUE INDEX commands_one_open ON commands (machine_id)
            WHERE state IN ('awaiting_approval', 'offboard_pending');
        """,
    ),
    (
        "0006_two_person",
        """
        -- What the machine's agent last said it requires of an offboard order (NULL: an agent
        -- that predates orders) and which operator keys it pins.
        ALTER TABLE machines ADD COLUMN offboard_approvals integer;
        ALTER TABLE machines ADD COLUMN operator_key_ids text;
        -- The order operators sign (base64 of its exact bytes), its digest, and a bulk batch.
        ALTER TABLE commands ADD COLUMN order_b64 text;
        ALTER TABLE commands ADD COLUMN order_sha256 text;
        ALTER TABLE commands ADD COLUMN batch_id text;
        CREATE INDEX commands_batch ON commands (batch_id) WHERE batch_id IS NOT NULL;
        -- Operators the collector can name when they sign (display only: agents pin keys).
        CREATE TABLE operators (
            key_id text COLLATE "C" PRIMARY KEY,
            name text NOT NULL,
            public_key text NOT NULL,
            added_at timestamptz NOT NULL,
            added_by text NOT NULL
        );
        CREATE TABLE command_approvals (
            command_id text COLLATE "C" NOT NULL REFERENCES commands (command_id),
            key_id text NOT NULL,
            signature text NOT NULL,
            actor text NOT NULL,
            approved_at timestamptz NOT NULL,
            PRIMARY KEY (command_id, key_id)
        );
        """,
    ),
    (
        "0007_people",
        """
        -- People who sign in to the pages: a memory-hard password hash, a TOTP secret (RFC 6238)
        -- and the last step whose code was accepted (a code is good once). A new session epoch
        -- ends every earlier session of the person (disable, MFA reset, password change).
        CREATE TABLE users (
            user_id text COLLATE "C" PRIMARY KEY,
            name text COLLATE "C" NOT NULL UNIQUE,
            role text NOT NULL,
            password_hash text NOT NULL,
            must_change_password integer NOT NULL DEFAULT 1,
            totp_secret text NOT NULL,
            totp_last_step bigint NOT NULL DEFAULT -1,
            mfa_confirmed_at timestamptz,
            session_epoch bigint NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            disabled_at timestamptz
        );
        -- A person limited to some clients (none listed: every client).
        CREATE TABLE user_clients (
            user_id text COLLATE "C" NOT NULL REFERENCES users (user_id),
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            PRIMARY KEY (user_id, client_id)
        );
        -- Single-use recovery codes, as digests.
        CREATE TABLE user_recovery_codes (
            user_id text COLLATE "C" NOT NULL REFERENCES users (user_id),
            code_hash text NOT NULL,
            used_at timestamptz,
            PRIMARY KEY (user_id, code_hash)
        );
        """,
    ),
    (
        "0008_coverage",
        """
        -- Each machine's own MACs (lower case, colons), as its latest network section said.
        CREATE TABLE machine_macs (
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            mac text COLLATE "C" NOT NULL,
            PRIMARY KEY (machine_id, mac)
        );
        CREATE INDEX machine_macs_mac ON machine_macs (mac);
        -- LAN neighbours a client's agents saw, one row per device and UTC day (day = days since
        -- the Unix epoch): the first and last sighting that day and the latest address.
        CREATE TABLE neighbor_days (
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            mac text COLLATE "C" NOT NULL,
            day integer NOT NULL,
            ip text NOT NULL,
            first_at timestamptz NOT NULL,
            last_at timestamptz NOT NULL,
            PRIMARY KEY (client_id, mac, day)
        );
        CREATE INDEX neighbor_days_day ON neighbor_days (day, client_id);
        -- Which devices each machine saw, per UTC day: one row per distinct set of neighbour MACs
        -- (`digest` names it), so a machine costs one row a day however many devices it sees.
        CREATE TABLE neighbor_sets (
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            day integer NOT NULL,
            digest text NOT NULL,
            macs text NOT NULL,
            first_at timestamptz NOT NULL,
            last_at timestamptz NOT NULL,
            PRIMARY KEY (client_id, day, machine_id, digest)
        );
        -- Devices a technician said need no agent (printers, phones), with who and why.
        CREATE TABLE dismissed_devices (
            client_id text COLLATE "C" NOT NULL REFERENCES clients (client_id),
            mac text COLLATE "C" NOT NULL,
            reason text NOT NULL,
            actor text NOT NULL,
            at timestamptz NOT NULL,
            PRIMARY KEY (client_id, mac)
        );
        -- Two live copies suspected behind one machine record, and how a technician resolved it.
        CREATE TABLE clone_suspicions (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            machine_id text COLLATE "C" NOT NULL REFERENCES machines (machine_id),
            kind text NOT NULL,
            detected_at timestamptz NOT NULL,
            detail text NOT NULL,
            resolved_at timestamptz,
            resolved_by text,
            reason text,
            kept_hostname text,
            split_hostname text,
            split_machine_id text
        );
        -- The last time a machine's own MACs changed to a set sharing none with the one before.
        CREATE TABLE mac_switches (
            machine_id text COLLATE "C" PRIMARY KEY REFERENCES machines (machine_id),
            at timestamptz NOT NULL,
            from_macs text NOT NULL,
            to_macs text NOT NULL
        );
        -- Clone detection reads the facts of the last day (hostnames alternating).
        CREATE INDEX facts_valid_from ON facts (valid_from);
        -- Set while a clone suspicion of the machine is open (its `flags` say clone_suspected).
        ALTER TABLE machines ADD COLUMN clone_suspected_at timestamptz;
        CREATE INDEX clone_suspicions_machine ON clone_suspicions (machine_id, id);
        CREATE UNIQUE INDEX clone_suspicions_open ON clone_suspicions (machine_id)
            WHERE resolved_at IS NULL;
        """,
    ),
    (
        "0009_machine_details",
        """
        -- What the machines list shows beside the facts, latest value only (no history): the
        -- agent's version and who is logged in (one name per line), from heartbeats, and the
        -- machine's own addresses (one per line), from its network section. NULL: never said.
        ALTER TABLE machines ADD COLUMN agent_version text;
        ALTER TABLE machines ADD COLUMN users text;
        ALTER TABLE machines ADD COLUMN addresses text;
        UPDATE machines SET agent_version = (
            SELECT a.agent_version FROM agents a WHERE a.agent_id = machines.agent_id)
        WHERE agent_id IS NOT NULL;
        """,
    ),
)

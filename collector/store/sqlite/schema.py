"""Named, recorded migrations of the SQLite store, applied in order, each exactly once.

Instants are INTEGER microseconds since the Unix epoch (UTC): exact, and ordered as numbers.
Presence is kept compact: the machine row holds the current run of continuous presence
(`presence_start` .. `last_seen`); a closed run moves to `presence` only when a gap longer than the
online window ends it. `facts` gets a row only when hostname, os, kind or components change.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE clients (
            client_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE enrollment_tokens (
            token_id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            token_hash TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        CREATE INDEX enrollment_tokens_client ON enrollment_tokens (client_id);
        CREATE TABLE api_tokens (
            token_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;
        CREATE TABLE machines (
            machine_id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            hardware_id TEXT NOT NULL,
            hostname TEXT NOT NULL,
            os TEXT NOT NULL,
            kind TEXT NOT NULL,
            components TEXT NOT NULL,
            first_seen INTEGER NOT NULL,
            presence_start INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            offboard_state TEXT,
            offboarded_at INTEGER,
            expired_at INTEGER,
            agent_id TEXT,
            UNIQUE (client_id, hardware_id)
        );
        CREATE INDEX machines_client ON machines (client_id, machine_id);
        CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY,
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            token_hash TEXT NOT NULL UNIQUE,
            agent_version TEXT,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        CREATE INDEX agents_machine ON agents (machine_id);
        CREATE TABLE revocations (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            token_hash TEXT NOT NULL
        );
        CREATE TABLE coverage (
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            first_seen INTEGER NOT NULL,
            offboarded_at INTEGER,
            PRIMARY KEY (machine_id, first_seen)
        ) WITHOUT ROWID;
        CREATE TABLE presence (
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            start_at INTEGER NOT NULL,
            end_at INTEGER NOT NULL,
            PRIMARY KEY (machine_id, start_at)
        ) WITHOUT ROWID;
        CREATE TABLE facts (
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            valid_from INTEGER NOT NULL,
            hostname TEXT NOT NULL,
            os TEXT NOT NULL,
            kind TEXT NOT NULL,
            components TEXT NOT NULL,
            PRIMARY KEY (machine_id, valid_from)
        ) WITHOUT ROWID;
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX audit_target ON audit (target, id);
        CREATE TABLE agent_events (
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            event_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            type TEXT NOT NULL,
            detail TEXT NOT NULL,
            PRIMARY KEY (machine_id, event_id)
        );
        CREATE INDEX agent_events_machine_at ON agent_events (machine_id, at);
        """,
    ),
    (
        "0002_commands",
        """
        ALTER TABLE agents ADD COLUMN command_seq INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE commands (
            command_id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            client_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            state TEXT NOT NULL,
            issuer TEXT NOT NULL,
            reason TEXT NOT NULL,
            ticket TEXT,
            created_at INTEGER NOT NULL,
            delivered_at INTEGER,
            delivery_count INTEGER NOT NULL DEFAULT 0,
            completed_at INTEGER,
            result_status TEXT,
            result_reason TEXT,
            steps TEXT,
            rejections INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX commands_state ON commands (state, created_at);
        CREATE INDEX commands_machine ON commands (machine_id, created_at);
        """,
    ),
    (
        "0003_inventory_fast_path",
        """
        -- Since when the machine row's hostname, os, kind and components hold: an inventory as of
        -- any later instant takes them from the row, without looking into `facts`.
        ALTER TABLE machines ADD COLUMN facts_since INTEGER NOT NULL DEFAULT 0;
        UPDATE machines SET facts_since = COALESCE(
            (SELECT MAX(f.valid_from) FROM facts f WHERE f.machine_id = machines.machine_id),
            first_seen);
        """,
    ),
    (
        "0004_health_progress_skew_kind",
        """
        -- One row the collector rewrites to prove, at start and while idle, that it can write.
        CREATE TABLE store_health (
            id INTEGER PRIMARY KEY,
            written_at INTEGER NOT NULL
        );
        -- What an agent said while a command ran, and its latest refusal (shown to the NOC).
        ALTER TABLE commands ADD COLUMN progress TEXT;
        ALTER TABLE commands ADD COLUMN progress_at INTEGER;
        ALTER TABLE commands ADD COLUMN last_rejection TEXT;
        ALTER TABLE commands ADD COLUMN last_rejected_at INTEGER;
        -- The agent's clock minus the collector's when it last said (milliseconds).
        -- A kind the agent reported that differs from the billed one, until an admin confirms.
        ALTER TABLE machines ADD COLUMN pending_kind TEXT;
        ALTER TABLE machines ADD COLUMN clock_offset_ms INTEGER;
        """,
    ),
    (
        "0005_hardening",
        """
        -- Sequence numbers per machine, so they never go down when it enrolls again.
        ALTER TABLE machines ADD COLUMN command_seq INTEGER NOT NULL DEFAULT 0;
        UPDATE machines SET command_seq = COALESCE(
            (SELECT MAX(a.command_seq) FROM agents a WHERE a.machine_id = machines.machine_id), 0);
        -- The end of a client's record when its hardware enrolled under another client.
        ALTER TABLE machines ADD COLUMN moved_at INTEGER;
        ALTER TABLE machines ADD COLUMN moved_to_client_id TEXT;
        ALTER TABLE coverage ADD COLUMN moved_at INTEGER;
        ALTER TABLE coverage ADD COLUMN moved_to_client_id TEXT;
        -- A technician's approval for known hardware to enroll again without its credential.
        ALTER TABLE machines ADD COLUMN reenroll_approved_until INTEGER;
        ALTER TABLE machines ADD COLUMN reenroll_approved_by TEXT;
        ALTER TABLE machines ADD COLUMN reenroll_approved_client_id TEXT;
        -- Enrollments of known hardware held until a technician approves (or proof comes).
        CREATE TABLE held_enrollments (
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            hardware_id TEXT NOT NULL,
            hostname TEXT NOT NULL,
            os TEXT NOT NULL,
            kind TEXT NOT NULL,
            address TEXT,
            first_at INTEGER NOT NULL,
            last_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (machine_id, client_id)
        );
        -- Enrollment tokens may carry a use limit.
        ALTER TABLE enrollment_tokens ADD COLUMN max_uses INTEGER;
        ALTER TABLE agents ADD COLUMN enrollment_token_id TEXT;
        CREATE INDEX agents_token_created ON agents (enrollment_token_id, created_at);
        ALTER TABLE enrollment_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
        -- API tokens limited to some clients (none listed: every client).
        CREATE TABLE api_token_clients (
            token_id TEXT NOT NULL REFERENCES api_tokens (token_id),
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            PRIMARY KEY (token_id, client_id)
        );
        -- The component names an offboard will uninstall, as the machine reported them.
        ALTER TABLE commands ADD COLUMN components TEXT;
        CREATE INDEX commands_created ON commands (created_at);
        CREATE UNIQUE INDEX commands_one_open ON commands (machine_id)
            WHERE state IN ('awaiting_approval', 'offboard_pending');
        """,
    ),
    (
        "0006_two_person",
        """
        -- What the machine's agent last said it requires of an offboard order (NULL: an agent
        -- that predates orders) and which operator keys it pins.
        ALTER TABLE machines ADD COLUMN offboard_approvals INTEGER;
        ALTER TABLE machines ADD COLUMN operator_key_ids TEXT;
        -- The order operators sign (base64 of its exact bytes), its digest, and a bulk batch.
        ALTER TABLE commands ADD COLUMN order_b64 TEXT;
        ALTER TABLE commands ADD COLUMN order_sha256 TEXT;
        ALTER TABLE commands ADD COLUMN batch_id TEXT;
        CREATE INDEX commands_batch ON commands (batch_id) WHERE batch_id IS NOT NULL;
        -- Operators the collector can name when they sign (display only: agents pin keys).
        CREATE TABLE operators (
            key_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            public_key TEXT NOT NULL,
            added_at INTEGER NOT NULL,
            added_by TEXT NOT NULL
        );
        CREATE TABLE command_approvals (
            command_id TEXT NOT NULL REFERENCES commands (command_id),
            key_id TEXT NOT NULL,
            signature TEXT NOT NULL,
            actor TEXT NOT NULL,
            approved_at INTEGER NOT NULL,
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
            user_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            must_change_password INTEGER NOT NULL DEFAULT 1,
            totp_secret TEXT NOT NULL,
            totp_last_step INTEGER NOT NULL DEFAULT -1,
            mfa_confirmed_at INTEGER,
            session_epoch INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            disabled_at INTEGER
        );
        -- A person limited to some clients (none listed: every client).
        CREATE TABLE user_clients (
            user_id TEXT NOT NULL REFERENCES users (user_id),
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            PRIMARY KEY (user_id, client_id)
        );
        -- Single-use recovery codes, as digests.
        CREATE TABLE user_recovery_codes (
            user_id TEXT NOT NULL REFERENCES users (user_id),
            code_hash TEXT NOT NULL,
            used_at INTEGER,
            PRIMARY KEY (user_id, code_hash)
        );
        """,
    ),
    (
        "0008_coverage",
        """
        -- Each machine's own MACs (lower case, colons), as its latest network section said.
        CREATE TABLE machine_macs (
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            mac TEXT NOT NULL,
            PRIMARY KEY (machine_id, mac)
        ) WITHOUT ROWID;
        CREATE INDEX machine_macs_mac ON machine_macs (mac);
        -- LAN neighbours a client's agents saw, one row per device and UTC day (day = days since
        -- the Unix epoch): the first and last sighting that day and the latest address.
        CREATE TABLE neighbor_days (
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            mac TEXT NOT NULL,
            day INTEGER NOT NULL,
            ip TEXT NOT NULL,
            first_at INTEGER NOT NULL,
            last_at INTEGER NOT NULL,
            PRIMARY KEY (client_id, mac, day)
        ) WITHOUT ROWID;
        CREATE INDEX neighbor_days_day ON neighbor_days (day, client_id);
        -- Which devices each machine saw, per UTC day: one row per distinct set of neighbour MACs
        -- (`digest` names it), so a machine costs one row a day however many devices it sees.
        CREATE TABLE neighbor_sets (
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            day INTEGER NOT NULL,
            digest TEXT NOT NULL,
            macs TEXT NOT NULL,
            first_at INTEGER NOT NULL,
            last_at INTEGER NOT NULL,
            PRIMARY KEY (client_id, day, machine_id, digest)
        ) WITHOUT ROWID;
        -- Devices a technician said need no agent (printers, phones), with who and why.
        CREATE TABLE dismissed_devices (
            client_id TEXT NOT NULL REFERENCES clients (client_id),
            mac TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (client_id, mac)
        ) WITHOUT ROWID;
        -- Two live copies suspected behind one machine record, and how a technician resolved it.
        CREATE TABLE clone_suspicions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            machine_id TEXT NOT NULL REFERENCES machines (machine_id),
            kind TEXT NOT NULL,
            detected_at INTEGER NOT NULL,
            detail TEXT NOT NULL,
            resolved_at INTEGER,
            resolved_by TEXT,
            reason TEXT,
            kept_hostname TEXT,
            split_hostname TEXT,
            split_machine_id TEXT
        );
        -- The last time a machine's own MACs changed to a set sharing none with the one before.
        CREATE TABLE mac_switches (
            machine_id TEXT PRIMARY KEY REFERENCES machines (machine_id),
            at INTEGER NOT NULL,
            from_macs TEXT NOT NULL,
            to_macs TEXT NOT NULL
        );
        -- Clone detection reads the facts of the last day (hostnames alternating).
        CREATE INDEX facts_valid_from ON facts (valid_from);
        -- Set while a clone suspicion of the machine is open (its `flags` say clone_suspected).
        ALTER TABLE machines ADD COLUMN clone_suspected_at INTEGER;
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
        ALTER TABLE machines ADD COLUMN agent_version TEXT;
        ALTER TABLE machines ADD COLUMN users TEXT;
        ALTER TABLE machines ADD COLUMN addresses TEXT;
        UPDATE machines SET agent_version = (
            SELECT a.agent_version FROM agents a WHERE a.agent_id = machines.agent_id)
        WHERE agent_id IS NOT NULL;
        """,
    ),
)

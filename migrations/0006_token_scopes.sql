-- Scoped, expiring tokens and server-side browser sessions (issue 15).

-- What a token may do, ordered by power: read < submit < write < admin
-- (server/src/auth/scope.rs). Tokens made before scopes could write anything,
-- but no route managed tokens or workers (`maelab token` works through the
-- database): they become `write`, exactly the power they had, not `admin`,
-- so an old CI token does not silently gain admin routes when they arrive.
-- The default stays for rows inserted by hand (`maelab token create` always
-- states the scope).
alter table api_token
    add column scope       text not null default 'write'
                           check (scope in ('read', 'submit', 'write', 'admin')),
    add column expires_at  timestamptz;                     -- null: never expires

-- Who created a run or study, by token id as well as name: a name is free
-- again once its token is revoked, so "created by `ci`" alone would let a new
-- `ci` token change the old one's runs. A `submit` token changes only rows
-- whose `created_by_token_id` is its own.
alter table run
    add column created_by_token_id bigint references api_token (token_id) on delete set null;
alter table study
    add column created_by_token_id bigint references api_token (token_id) on delete set null;

-- Existing rows: the token of that name that was active when the row was made.
update study s set created_by_token_id = (
    select t.token_id from api_token t
    where t.name = s.created_by and t.created_at <= s.created_at
      and (t.revoked_at is null or t.revoked_at >= s.created_at)
    order by t.created_at desc limit 1)
where s.created_by is not null;
update run r set created_by_token_id = coalesce(
    (select s.created_by_token_id from study s where s.study_id = r.study_id),
    (select t.token_id from api_token t
     where t.name = r.created_by and t.created_at <= r.created_at
       and (t.revoked_at is null or t.revoked_at >= r.created_at)
     order by t.created_at desc limit 1))
where r.created_by is not null;

-- New rows: the writers (core/src/db) record the creator's name; at insert
-- that name belongs to exactly one active token (api_token_active_name), the
-- caller's, verified a moment before. A study's runs, queued later (finetunes
-- after their pretraining), belong to the study's token even if the name has
-- been reused since.
create function set_created_by_token() returns trigger language plpgsql as $$
begin
    if new.created_by_token_id is null and new.created_by is not null then
        if tg_table_name = 'run' and new.study_id is not null then
            select s.created_by_token_id into new.created_by_token_id
            from study s where s.study_id = new.study_id;
        else
            select t.token_id into new.created_by_token_id
            from api_token t where t.name = new.created_by and t.revoked_at is null;
        end if;
    end if;
    return new;
end $$;
create trigger run_created_by_token before insert on run
    for each row execute function set_created_by_token();
create trigger study_created_by_token before insert on study
    for each row execute function set_created_by_token();

-- A browser's sign-in: the cookie holds a random secret whose sha256 is kept
-- here, so sign-out and revocation end it on the server, and a cookie never
-- carries a token's secret.
create table browser_session (
    session_id    bigserial primary key,
    session_hash  text not null unique check (session_hash ~ '^[0-9a-f]{64}$'),  -- sha256 of the cookie value
    token_id      bigint not null references api_token (token_id) on delete cascade,
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null,                      -- at most a week, never past the token's expiry
    revoked_at    timestamptz,                               -- signed out, or its token revoked
    check (expires_at > created_at)
);
create index browser_session_token on browser_session (token_id) where revoked_at is null;

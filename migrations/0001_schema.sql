-- maelab schema: runs, their jobs on the queue, the workers that claim them,
-- the metrics and artifacts the workers stream back, and API tokens.
-- Applied files are never edited; changes come as new numbered files.

create type run_kind as enum ('pretrain', 'finetune');

-- queued: waiting for a worker; running: a worker holds its job's lease;
-- succeeded/failed/cancelled: terminal until a retry requeues it.
create type run_status as enum ('queued', 'running', 'succeeded', 'failed', 'cancelled');

-- The job's own state mirrors the run's, but only the queue moves it.
create type job_state as enum ('queued', 'running', 'succeeded', 'failed', 'cancelled');

create function set_updated_at() returns trigger language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end $$;

create table worker (
    worker_id      uuid primary key,                         -- fresh at every process start
    name           text not null check (length(name) between 1 and 200),
    host           text not null,
    device         text not null,                            -- cpu, cuda:0, ...
    gpu_name       text,                                     -- null on the CPU
    torch_version  text not null,
    pid            integer,
    started_at     timestamptz not null default now(),
    last_seen_at   timestamptz not null default now(),       -- bumped by heartbeats
    stopped_at     timestamptz                               -- set on a clean exit
);

create table run (
    run_id         uuid primary key default gen_random_uuid(),
    name           text not null check (length(name) between 1 and 200),
    kind           run_kind not null,
    model          text not null check (model in ('mae', 'wave_mae')),
    preset         text not null,
    config         jsonb not null,                           -- the resolved, validated RunConfig
    tags           text[] not null default '{}',
    status         run_status not null default 'queued',
    parent_run_id  uuid references run (run_id),             -- the pretrain run a finetune starts from
    parent_epoch   integer check (parent_epoch >= 0),
    epochs_total   integer not null check (epochs_total > 0),
    n_parameters   bigint check (n_parameters > 0),
    error          text,                                     -- why it failed or was cancelled
    created_by     text,                                     -- token name, or null for the local form
    created_at     timestamptz not null default now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    updated_at     timestamptz not null default now(),
    check (kind = 'finetune' or (parent_run_id is null and parent_epoch is null)),
    check (parent_epoch is null or parent_run_id is not null),
    check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null))
);
create trigger run_updated_at before update on run for each row execute function set_updated_at();
create index run_created_at on run (created_at desc);
create index run_status_created on run (status, created_at desc);
create index run_tags on run using gin (tags);

create table artifact (
    artifact_id    bigserial primary key,
    run_id         uuid not null references run (run_id) on delete cascade,
    kind           text not null check (kind in ('reconstruction', 'checkpoint', 'log')),
    epoch          integer check (epoch >= 0),
    name           text not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    media_type     text not null,
    bytes          bytea not null,
    sha256         text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes     bigint not null check (size_bytes >= 0),
    created_at     timestamptz not null default now(),
    unique (run_id, name)
);
create index artifact_run_kind on artifact (run_id, kind, epoch);

create table job (
    job_id            bigserial primary key,
    run_id            uuid unique references run (run_id) on delete cascade,  -- one attempt chain per run
    job_type          text not null default 'train' check (job_type in ('train', 'load_test')),
    state             job_state not null default 'queued',
    priority          smallint not null default 0,           -- higher first
    attempt           integer not null default 0 check (attempt >= 0),
    max_attempts      integer not null default 3 check (max_attempts >= 1),
    lease_token       bigint not null default 0,             -- fencing token, bumped at every claim
    worker_id         uuid references worker (worker_id),
    lease_expires_at  timestamptz,
    heartbeat_at      timestamptz,
    cancel_requested  boolean not null default false,
    run_after         timestamptz not null default now(),    -- backoff after a lost lease
    enqueued_at       timestamptz not null default now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    error             text,
    checkpoint_id     bigint references artifact (artifact_id) on delete set null,  -- resume point
    checkpoint_epoch  integer check (checkpoint_epoch >= 0),
    payload           jsonb not null default '{}',           -- load_test jobs: what to pretend
    updated_at        timestamptz not null default now(),
    check (job_type = 'load_test' or run_id is not null),
    check ((state = 'running') = (worker_id is not null and lease_expires_at is not null)),
    check ((state in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null)),
    check (attempt <= max_attempts)
);
create trigger job_updated_at before update on job for each row execute function set_updated_at();
-- Matches the claim query: queued jobs by priority, then age.
create index job_fetch on job (priority desc, enqueued_at, job_id) where state = 'queued';
create index job_lease on job (lease_expires_at) where state = 'running';

create table epoch_metric (
    run_id             uuid not null references run (run_id) on delete cascade,
    epoch              integer not null check (epoch >= 0),
    train_lr           double precision not null,
    train_loss         double precision not null,
    test_loss          double precision,
    test_acc1          double precision check (test_acc1 between 0 and 100),
    test_acc5          double precision check (test_acc5 between 0 and 100),
    n_parameters       bigint,
    psnr               double precision,                     -- over masked patches of the fixed set
    hf_ratio           double precision check (hf_ratio >= 0),
    epoch_seconds      double precision not null check (epoch_seconds >= 0),
    images_per_second  double precision check (images_per_second >= 0),
    extra              jsonb not null default '{}',          -- further log.txt keys
    recorded_at        timestamptz not null default now(),
    primary key (run_id, epoch)
);

create table step_metric (
    run_id             uuid not null references run (run_id) on delete cascade,
    epoch              integer not null check (epoch >= 0),
    step               integer not null check (step >= 0),   -- optimizer step within the run
    progress           double precision not null check (progress between 0 and 1),  -- within the epoch
    train_loss         double precision not null,
    lr                 double precision not null,
    images_per_second  double precision check (images_per_second >= 0),
    recorded_at        timestamptz not null default now(),
    primary key (run_id, step)
);

create table api_token (
    token_id       bigserial primary key,
    name           text not null check (length(name) between 1 and 100),
    token_hash     text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),  -- sha256 of the secret
    prefix         text not null,                            -- first characters, to recognise it in lists
    created_at     timestamptz not null default now(),
    last_used_at   timestamptz,
    revoked_at     timestamptz
);
create unique index api_token_active_name on api_token (name) where revoked_at is null;

-- Live updates: every change a page may show NOTIFYs in the writing transaction,
-- so a listener never sees a notification for a row it cannot yet read.
create function notify_run_status() returns trigger language plpgsql as $$
begin
    perform pg_notify('maelab_events', json_build_object(
        'run_id', new.run_id, 'table', tg_table_name, 'status', new.status)::text);
    return null;
end $$;
create function notify_run_epoch() returns trigger language plpgsql as $$
begin
    perform pg_notify('maelab_events', json_build_object(
        'run_id', new.run_id, 'table', tg_table_name, 'epoch', new.epoch)::text);
    return null;
end $$;
create trigger run_notify after insert or update of status on run
    for each row execute function notify_run_status();
create trigger epoch_metric_notify after insert or update on epoch_metric
    for each row execute function notify_run_epoch();
create trigger step_metric_notify after insert on step_metric
    for each row execute function notify_run_epoch();
create trigger artifact_notify after insert on artifact
    for each row when (new.kind = 'reconstruction') execute function notify_run_epoch();

-- Wakes idle workers; the payload is only a hint.
create function notify_job_queued() returns trigger language plpgsql as $$
begin
    perform pg_notify('maelab_jobs', new.job_type);
    return null;
end $$;
create trigger job_queued_notify after insert or update of state on job
    for each row when (new.state = 'queued') execute function notify_job_queued();

-- Runs trained anywhere (issue 12, docs/ingest.md): created through the API,
-- never queued, written by their client in batches of points, finished by it
-- or marked lost when it goes silent.

alter table run
    add column source              text not null default 'worker'
                                   check (source in ('worker', 'external')),
    add column client_run_id       text check (length(client_run_id) between 1 and 200),
    add column last_seen_at        timestamptz,              -- external: last heartbeat or batch
    add column lost_after_seconds  integer check (lost_after_seconds between 10 and 604800),
    add check (source = 'worker' or (last_seen_at is not null and lost_after_seconds is not null));
-- A client's retried create finds its run (idempotent creation per token).
create unique index run_client_run_id on run (coalesce(created_by, ''), client_run_id)
    where client_run_id is not null;
-- The lost sweep reads only running external runs.
create index run_external_running on run (last_seen_at) where source = 'external' and status = 'running';

-- An external run names its own model (mae_vit_base_patch16, ...).
alter table run drop constraint run_model_check;
alter table run add constraint run_model_check
    check (source = 'external' or model in ('mae', 'wave_mae'));
alter table run add constraint run_model_length check (length(model) between 1 and 100);

-- Lost is terminal like the others (a client that comes back makes it running again).
do $$
declare c record;
begin
    for c in select conname from pg_constraint
             where conrelid = 'run'::regclass and contype = 'c'
               and pg_get_constraintdef(oid) like '%finished_at IS NOT NULL%'
    loop
        execute format('alter table run drop constraint %I', c.conname);
    end loop;
end $$;
alter table run add constraint run_finished_when_terminal
    check ((status in ('succeeded', 'failed', 'cancelled', 'lost')) = (finished_at is not null));

-- A client may log any subset of the MAE keys at a step.
alter table epoch_metric
    alter column train_lr drop not null,
    alter column train_loss drop not null,
    alter column epoch_seconds drop not null;

-- Every point a client logs, any key: upserted on (run, key, step), so a
-- retried batch never duplicates a point and steps may arrive in any order.
-- The MAE keys are also projected into epoch_metric (step = epoch).
create table metric_point (
    run_id       uuid not null references run (run_id) on delete cascade,
    key          text not null check (length(key) between 1 and 250 and key !~ '[[:cntrl:]]'),
    step         bigint not null check (step >= 0),
    value        double precision not null
                 check (value <> 'NaN' and value <> 'Infinity' and value <> '-Infinity'),
    wall_time    timestamptz,                              -- when the client logged it
    recorded_at  timestamptz not null default now(),
    primary key (run_id, key, step)
);

-- An ingest batch writes many epoch rows in one transaction and notifies and
-- refreshes the run summary once at its end (`set local maelab.batch = 'on'`):
-- per-row notifications would serialise on PostgreSQL's commit-time notify
-- lock, and per-row summaries rescan the run's epochs once per row.
create or replace function notify_run_epoch() returns trigger language plpgsql as $$
begin
    if current_setting('maelab.batch', true) = 'on' then
        return null;
    end if;
    perform pg_notify('maelab_events', json_build_object(
        'run_id', new.run_id, 'table', tg_table_name, 'epoch', new.epoch)::text);
    return null;
end $$;

create or replace function epoch_metric_run_summary() returns trigger language plpgsql as $$
begin
    if current_setting('maelab.batch', true) = 'on' then
        return null;
    end if;
    if tg_op = 'INSERT' then
        perform run_summary_refresh(new.run_id);
    elsif tg_op = 'UPDATE' then
        perform run_summary_refresh(new.run_id);
        if old.run_id <> new.run_id then
            perform run_summary_refresh(old.run_id);
        end if;
    else
        perform run_summary_refresh(old.run_id);
    end if;
    return null;
end $$;

-- Clients upload any file beside reconstructions, checkpoints and logs.
do $$
declare c record;
begin
    for c in select conname from pg_constraint
             where conrelid = 'artifact'::regclass and contype = 'c'
               and pg_get_constraintdef(oid) like '%reconstruction%'
    loop
        execute format('alter table artifact drop constraint %I', c.conname);
    end loop;
end $$;
alter table artifact add constraint artifact_kind_known
    check (kind in ('reconstruction', 'checkpoint', 'log', 'file'));

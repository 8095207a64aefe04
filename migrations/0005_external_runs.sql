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

-- One ingest batch in one statement (one round trip, its own transaction):
-- check the run, mark it seen (a lost run runs again), upsert the points,
-- rebuild the epoch rows of the steps that carry MAE keys (from all of their
-- points, so keys sent apart meet in one row), grow epochs_total and refresh
-- the run summary once. Answers 'ok' with the epochs written, or why not:
-- 'not_found', 'worker' (a worker's run), or the finished run's status.
create function ingest_points(p_run uuid, p_keys text[], p_steps bigint[], p_values float8[],
                              p_times timestamptz[], p_epoch_steps bigint[])
returns table (outcome text, first_epoch integer, last_epoch integer)
language plpgsql as $$
declare
    v_source text;
    v_status text;
begin
    select r.source, r.status::text into v_source, v_status
    from run r where r.run_id = p_run for no key update;
    if not found then
        return query select 'not_found'::text, null::integer, null::integer;
        return;
    end if;
    if v_source <> 'external' then
        return query select 'worker'::text, null::integer, null::integer;
        return;
    end if;
    if v_status not in ('running', 'lost') then
        return query select v_status, null::integer, null::integer;
        return;
    end if;
    if v_status = 'lost' then
        update run set status = 'running', finished_at = null, error = null, last_seen_at = now()
        where run_id = p_run;
    else
        update run set last_seen_at = now() where run_id = p_run;
    end if;
    perform set_config('maelab.batch', 'on', true);
    insert into metric_point (run_id, key, step, value, wall_time)
    select p_run, u.k, u.s, u.v, u.t from unnest(p_keys, p_steps, p_values, p_times) as u(k, s, v, t)
    on conflict (run_id, key, step) do update
        set value = excluded.value, wall_time = excluded.wall_time, recorded_at = now();
    if coalesce(array_length(p_epoch_steps, 1), 0) > 0 then
        insert into epoch_metric (run_id, epoch, train_lr, train_loss, test_loss, test_acc1,
             test_acc5, n_parameters, psnr, hf_ratio, epoch_seconds, images_per_second, extra)
        select p_run, p.step::integer,
               max(p.value) filter (where p.key = 'train_lr'),
               max(p.value) filter (where p.key = 'train_loss'),
               max(p.value) filter (where p.key = 'test_loss'),
               max(p.value) filter (where p.key = 'test_acc1'),
               max(p.value) filter (where p.key = 'test_acc5'),
               (max(p.value) filter (where p.key = 'n_parameters'))::bigint,
               max(p.value) filter (where p.key = 'psnr'),
               max(p.value) filter (where p.key = 'hf_ratio'),
               max(p.value) filter (where p.key = 'epoch_seconds'),
               max(p.value) filter (where p.key = 'images_per_second'),
               '{}'::jsonb
        from metric_point p
        where p.run_id = p_run and p.step = any(p_epoch_steps)
          and p.key in ('train_lr', 'train_loss', 'test_loss', 'test_acc1', 'test_acc5',
                        'n_parameters', 'psnr', 'hf_ratio', 'epoch_seconds', 'images_per_second')
        group by p.step
        on conflict (run_id, epoch) do update set
            train_lr = excluded.train_lr, train_loss = excluded.train_loss,
            test_loss = excluded.test_loss, test_acc1 = excluded.test_acc1,
            test_acc5 = excluded.test_acc5, n_parameters = excluded.n_parameters,
            psnr = excluded.psnr, hf_ratio = excluded.hf_ratio,
            epoch_seconds = excluded.epoch_seconds,
            images_per_second = excluded.images_per_second, recorded_at = now();
        update run set epochs_total = greatest(epochs_total, (select max(s) from unnest(p_epoch_steps) s)::integer + 1)
        where run_id = p_run;
        perform run_summary_refresh(p_run);
    end if;
    perform set_config('maelab.batch', 'off', true);
    return query select 'ok'::text,
        (select min(s) from unnest(p_epoch_steps) s)::integer,
        (select max(s) from unnest(p_epoch_steps) s)::integer;
end $$;

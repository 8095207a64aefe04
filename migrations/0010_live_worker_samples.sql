-- Live system figures (issue 13, item 5): a worker's sample and a worker
-- starting or stopping notify like every other change a page shows, so the
-- workers page and a run page's system charts follow them from the live hub
-- instead of re-reading on a timer (architecture.md: no timer polling). The
-- payload names the row; the hub reads it once for every open page.
create function notify_worker_sample() returns trigger language plpgsql as $$
begin
    perform pg_notify('maelab_events', json_build_object(
        'table', tg_table_name, 'run_id', new.run_id, 'worker_id', new.worker_id,
        'sample_id', new.worker_sample_id)::text);
    return null;
end $$;
create trigger worker_sample_notify after insert on worker_sample
    for each row execute function notify_worker_sample();

create function notify_worker_state() returns trigger language plpgsql as $$
begin
    perform pg_notify('maelab_events', json_build_object(
        'table', tg_table_name, 'worker_id', new.worker_id)::text);
    return null;
end $$;
create trigger worker_state_notify after insert or update of stopped_at on worker
    for each row execute function notify_worker_state();

-- Artifact bytes move to an object store (core/src/artifact_store): the
-- database keeps metadata and the object's key. Rows written before keep
-- their bytea and are read in place until `maelab artifacts migrate` moves
-- them (upload, verify, then one update: store_key set, bytes null).

alter table artifact alter column bytes drop not null;
alter table artifact add column store_key text unique                 -- runs/<run_id>/<uuid>/<name>
    check (store_key ~ '^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$');
alter table artifact add constraint artifact_bytes_or_store_key
    check ((bytes is null) <> (store_key is null));

-- Objects whose row was deleted (retention, a deleted run) or replaced (a
-- new upload under the same name), recorded in the transaction that did it;
-- the object is deleted from the store after the commit, then the record.
-- A crash in between leaves a record, never a leaked object. An upload in
-- flight (`maelab artifacts migrate`) records its key ahead with a later
-- delete_after, so a crash leaks nothing and a sweep meanwhile spares it.
create table artifact_orphan (
    store_key     text primary key,
    delete_after  timestamptz not null default now()
);

create function artifact_orphan_record() returns trigger language plpgsql as $$
begin
    if old.store_key is not null
       and (tg_op = 'DELETE' or new.store_key is distinct from old.store_key) then
        insert into artifact_orphan (store_key) values (old.store_key) on conflict do nothing;
    end if;
    return null;
end $$;
create trigger artifact_orphan_record after delete or update of store_key on artifact
    for each row execute function artifact_orphan_record();

-- The store the server uses, published at its start so workers on the same
-- host need no flag (a worker's --artifact-store wins). One row.
create table artifact_store_setting (
    singleton   boolean primary key default true check (singleton),
    url         text not null check (length(url) between 1 and 2000),
    updated_at  timestamptz not null default now()
);

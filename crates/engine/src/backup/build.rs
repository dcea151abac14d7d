//! Building: the tree builder walks the tree in slot order, keeps the parent's untouched
//! subtrees by id, and hands new chunks and pages to the [`ChunkWriter`] (`writer.rs`), which
//! deduplicates them against this run's (and a resumed run's) uploads and packs and indexes
//! them.

use super::*;

/// Builds the new tree in slot order, pulling slot data as leaves need it.
pub(super) struct TreeBuilder<'a> {
    pub(super) repo: &'a Repository,
    pub(super) bitmap: &'a SlotBitmap,
    pub(super) slots: u64,
    /// Slots marked to be read, and their size.
    pub(super) planned_slots: u64,
    pub(super) chunk_size: u64,
    pub(super) inherit: bool,
    /// The tree this one is built on.
    pub(super) parent: ParentTree,
    pub(super) data: DataFeed,
    /// Where new chunks and pages go.
    pub(super) writer: ChunkWriter,
    /// What was read (the writer counts what was stored).
    pub(super) stats: BackupStats,
    pub(super) progress: Option<Arc<dyn Progress>>,
    /// Position and id of every non-zero page this backup built, for its tree table.
    pub(super) new_pages: Vec<(u8, u64, ChunkId)>,
}

/// What the build stage hands the commit.
pub(super) struct Built {
    /// The new tree's root.
    pub(super) root: ChunkId,
    /// The new tree's depth.
    pub(super) depth: u32,
    /// Slots the tree covers.
    pub(super) slots: u64,
    /// What was read and stored (the commit adds the uploads and the time).
    pub(super) stats: BackupStats,
    /// Bytes of data packs uploaded.
    pub(super) data_pack_bytes: u64,
}

impl<'a> TreeBuilder<'a> {
    /// A builder for the slots `plan` marks, reading them from `data`, comparing with the
    /// `parent` tree and storing what is new through `writer`.
    pub(super) fn new(
        repo: &'a Repository,
        plan: &'a Plan,
        parent: ParentTree,
        data: DataFeed,
        writer: ChunkWriter,
        progress: Option<Arc<dyn Progress>>,
    ) -> Self {
        TreeBuilder {
            repo,
            bitmap: &plan.bitmap,
            slots: plan.bitmap.slots(),
            planned_slots: plan.bitmap.count(),
            chunk_size: repo.chunk_size(),
            inherit: plan.change_source.inherits_from_parent(),
            parent,
            data,
            writer,
            stats: BackupStats::default(),
            progress,
            new_pages: Vec::new(),
        }
    }

    /// The build stage: builds the tree on the parent's, waits for every upload, and writes
    /// the last index object and the tree table of backup `manifest_id`.
    pub(super) async fn run(mut self, manifest_id: &str, clock: &Clock) -> Result<Built> {
        let slots = self.slots;
        let depth = tree::depth_for(slots);
        let root = self.build(depth - 1, 0, self.parent.root).await?;
        clock.log("tree built");
        self.writer.finish_packers().await?;
        let table = self.tree_table();
        // The last index object and the tree table are independent: write them together.
        let repo = self.repo;
        tokio::try_join!(self.writer.write_index(), table.write(repo, manifest_id))?;
        clock.log("uploads finished");
        self.writer.count_into(&mut self.stats);
        Ok(Built {
            root,
            depth,
            slots,
            stats: self.stats,
            data_pack_bytes: self.writer.data_pack_bytes(),
        })
    }

    /// Builds page `index` at `level`; `parent` is the parent tree's id for the same page.
    pub(super) fn build(
        &mut self,
        level: u32,
        index: u64,
        parent: ChunkId,
    ) -> futures::future::BoxFuture<'_, Result<ChunkId>> {
        Box::pin(async move {
            let (start, end) = tree::page_span(level, index, self.slots);
            if !self.bitmap.any_in(start, end) {
                return Ok(if self.inherit { parent } else { ChunkId::ZERO });
            }
            let entries = tree::page_entries(level, index, self.slots);
            let parent_ids = match &self.parent.reader {
                Some(reader) if !parent.is_zero() => reader.page(&parent, entries).await?,
                _ => vec![ChunkId::ZERO; entries],
            };
            let mut ids = Vec::with_capacity(entries);
            for (j, parent_id) in parent_ids.into_iter().enumerate() {
                let id = if level == 0 {
                    let slot = start + j as u64;
                    if self.bitmap.get(slot) {
                        self.take_slot(slot, parent_id).await?
                    } else if self.inherit {
                        parent_id
                    } else {
                        ChunkId::ZERO
                    }
                } else {
                    self.build(level - 1, index * FANOUT + j as u64, parent_id)
                        .await?
                };
                ids.push(id);
            }
            let id = self.store_page(&ids, parent).await?;
            if !id.is_zero() {
                self.new_pages.push((level as u8, index, id));
            }
            Ok(id)
        })
    }

    pub(super) async fn take_slot(&mut self, slot: u64, parent_id: ChunkId) -> Result<ChunkId> {
        let data = self
            .data
            .next()
            .await?
            .ok_or_else(|| Error::Internal(format!("slot {slot} was planned but not read")))?;
        if data.slot != slot {
            return Err(Error::Internal(format!(
                "expected slot {slot}, read slot {}",
                data.slot
            )));
        }
        self.stats.bytes_read += data.bytes.len() as u64;
        self.stats.slots_read += 1;
        if let Some(progress) = &self.progress {
            progress.advance(data.bytes.len() as u64);
        }
        let id = data.id;
        let parent_id = if self.parent.quarantine.contains(&id) {
            ChunkId::ZERO
        } else {
            parent_id
        };
        if id.is_zero() || id == parent_id || self.writer.is_stored(&id) {
            return Ok(id);
        }
        let outlook = self.outlook();
        self.writer.add_data(id, data.bytes, outlook).await?;
        Ok(id)
    }

    /// Input read so far and still to read, for the data packer's last packs.
    pub(super) fn outlook(&self) -> Outlook {
        let remaining_slots = self.planned_slots.saturating_sub(self.stats.slots_read);
        Outlook {
            input_seen: self.stats.bytes_read,
            input_remaining: remaining_slots.saturating_mul(self.chunk_size),
        }
    }

    pub(super) async fn store_page(&mut self, ids: &[ChunkId], parent: ChunkId) -> Result<ChunkId> {
        if ids.iter().all(ChunkId::is_zero) {
            return Ok(ChunkId::ZERO);
        }
        let bytes = tree::encode_page(ids);
        let id = self.repo.hasher().hash(&bytes);
        if id == parent || self.writer.is_stored(&id) {
            return Ok(id);
        }
        self.writer.add_page(id, bytes).await?;
        Ok(id)
    }

    /// The new tree's table: the parent's pages in the subtrees this backup inherited, and the
    /// pages it built, each located where this backup uploaded it or, failing that, where the
    /// reader's newest index puts it (after a reload, fresher than the parent's table). A page
    /// located nowhere is left out: the next backup then falls back to the pack index for it.
    pub(super) fn tree_table(&self) -> TreeTable {
        let index = self.parent.reader.as_ref().map(PageReader::index);
        let locate = |id: &ChunkId| -> Option<(ChunkId, u64, u32)> {
            if let Some(found) = self.writer.tree_location(id) {
                return Some(found);
            }
            let index = index.as_ref()?;
            let location = index.get(id)?;
            Some((
                index.pack_name(location.pack),
                location.offset,
                location.length,
            ))
        };
        let inherited = (self.parent.table.as_ref())
            .filter(|_| self.inherit)
            .into_iter()
            .flat_map(|table| table.pages.iter())
            .filter(|page| {
                let (start, end) = tree::page_span(u32::from(page.level), page.index, self.slots);
                start < end && !self.bitmap.any_in(start, end)
            })
            .map(|page| (page.level, page.index, page.id));
        let pages = inherited
            .chain(self.new_pages.iter().copied())
            .filter_map(|(level, index, id)| {
                let (pack, offset, length) = locate(&id)?;
                Some(TablePage {
                    level,
                    index,
                    id,
                    pack,
                    offset,
                    length,
                })
            })
            .collect();
        TreeTable { pages }
    }
}

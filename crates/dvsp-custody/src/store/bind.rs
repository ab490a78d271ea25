//! The column bindings that template and retained-image writes share (the statements are
//! the same text on both stores): one place for each row's column order.

/// Binds a template's 11 columns, in the order `INSERT INTO templates (id, gallery_id,
/// subject_id, model_id, key_id, data_key, feature, quality, created_at, epoch, image_id)`
/// takes them, to query `$q`.
macro_rules! bind_template {
    ($q:expr, $row:expr, $quality:expr, $at:expr, $image:expr) => {
        $q.bind(&$row.id)
            .bind(&$row.gallery_id)
            .bind(&$row.subject_id)
            .bind(&$row.model_id)
            .bind(&$row.sealed.key_id)
            .bind(&$row.sealed.data_key)
            .bind(&$row.sealed.ciphertext)
            .bind($quality)
            .bind($at)
            .bind($row.epoch)
            .bind($image)
    };
}
pub(super) use bind_template;

/// Inserts `image` within transaction `tx` (the statement is the same on both stores).
macro_rules! insert_image {
    ($tx:expr, $image:expr) => {
        sqlx::query(
            "INSERT INTO enrollment_images (id, gallery_id, subject_id, key_id, data_key, image, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&$image.id)
        .bind(&$image.gallery_id)
        .bind(&$image.subject_id)
        .bind(&$image.sealed.key_id)
        .bind(&$image.sealed.data_key)
        .bind(&$image.sealed.ciphertext)
        .bind(now_ms())
        .execute(&mut *$tx)
        .await
    };
}
pub(super) use insert_image;

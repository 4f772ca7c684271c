//! The service as an Apollo Federation v2 subgraph (`FEDERATION=on`): `User` and `Visit` are
//! entities keyed by `id`, resolved through the request's batch loader under the same rules as the
//! queries that return them. Off, the schema holds no entity, so the plain API (and
//! `schema.graphql`) has no `_service` or `_entities`.
use async_graphql::{Context, ID, Object};

use super::{
    context::{ApiResult, caller},
    loaders::{UserKey, VisitKey, loader},
    objects::{User, Visit},
    scalars::{parse_id, parse_visit_id},
};
use crate::{domain::UserId, visits};

/// The entity resolvers a router calls through `_entities`.
#[derive(Default)]
pub struct Entities;

#[Object]
impl Entities {
    /// A user by id, as `User` shows them to the caller (private fields for themself only);
    /// `null` for an id of no one.
    #[graphql(entity)]
    async fn find_user_by_id(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<User>> {
        let viewer = caller(ctx).await?.user_id;
        let user_id = UserId(parse_id(&id, "id")?);
        let model = loader(ctx).load_one(UserKey(user_id)).await?;
        Ok(model.map(|model| User::new(model, Some(viewer))))
    }

    /// A visit by id, only for whoever `visit(id:)` would show it to: its member, its pal, or
    /// anyone while it is an open request; `null` for anyone else, as for an id of no visit.
    #[graphql(entity)]
    async fn find_visit_by_id(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Visit>> {
        let viewer = caller(ctx).await?.user_id;
        let visit_id = parse_visit_id(&id, "id")?;
        let visit = loader(ctx).load_one(VisitKey(visit_id)).await?;
        Ok(visit
            .filter(|visit| visits::is_visible_to(visit, viewer))
            .map(Visit))
    }
}

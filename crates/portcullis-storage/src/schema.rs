//! The tables, as diesel sees them. Only SQL types that both backends share are used:
//! `Text`, `BigInt`, `Bool`. Kept by hand in step with `migrations/{sqlite,postgres}`; the
//! contract tests read and write every column on both backends.

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        email -> Nullable<Text>,
        email_verified -> Bool,
        display_name -> Nullable<Text>,
        password_hash -> Nullable<Text>,
        password_change_required -> Bool,
        status -> Text,
        totp_secret_enc -> Nullable<Text>,
        totp_enabled_at -> Nullable<BigInt>,
        totp_last_step -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    user_recovery_codes (id) {
        id -> Text,
        user_id -> Text,
        code_hash -> Text,
        created_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    roles (id) {
        id -> Text,
        name -> Text,
        description -> Text,
        builtin -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    user_roles (user_id, role_id) {
        user_id -> Text,
        role_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    clients (id) {
        id -> Text,
        name -> Text,
        redirect_uris -> Text,
        post_logout_redirect_uris -> Text,
        grant_types -> Text,
        auth_method -> Text,
        allowed_scopes -> Text,
        first_party -> Bool,
        require_pkce -> Bool,
        access_token_ttl -> BigInt,
        id_token_ttl -> BigInt,
        refresh_token_ttl -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        rate_limit_tier -> Nullable<Text>,
        roles_claim -> Bool,
    }
}

diesel::table! {
    client_registrations (client_id) {
        client_id -> Text,
        token_hash -> Text,
    }
}

diesel::table! {
    client_secrets (id) {
        id -> Text,
        client_id -> Text,
        secret_hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    login_sessions (id) {
        id -> Text,
        token_hash -> Text,
        user_id -> Nullable<Text>,
        stage -> Text,
        authenticated_at -> Nullable<BigInt>,
        amr -> Text,
        csrf_token_hash -> Text,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> BigInt,
        last_seen_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    consents (user_id, client_id) {
        user_id -> Text,
        client_id -> Text,
        scope -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    grants (id) {
        id -> Text,
        client_id -> Text,
        user_id -> Nullable<Text>,
        session_id -> Nullable<Text>,
        scope -> Text,
        auth_time -> Nullable<BigInt>,
        amr -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoke_reason -> Nullable<Text>,
    }
}

diesel::table! {
    authorization_codes (code_hash) {
        code_hash -> Text,
        grant_id -> Text,
        redirect_uri -> Text,
        nonce -> Nullable<Text>,
        code_challenge -> Nullable<Text>,
        code_challenge_method -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        consumed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        grant_id -> Text,
        parent_hash -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        state -> Text,
        public_jwk -> Text,
        private_key_enc -> Text,
        master_key_id -> Text,
        created_at -> BigInt,
        activates_at -> Nullable<BigInt>,
        retired_at -> Nullable<BigInt>,
        remove_after -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        prefix -> Text,
        key_hash -> Text,
        scopes -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        created_by -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        id -> Text,
        occurred_at -> BigInt,
        event_type -> Text,
        outcome -> Text,
        actor -> Nullable<Text>,
        subject -> Nullable<Text>,
        client_id -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        request_id -> Nullable<Text>,
        details -> Text,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    groups (id) {
        id -> Text,
        name -> Text,
        description -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    group_roles (group_id, role_id) {
        group_id -> Text,
        role_id -> Text,
    }
}

diesel::table! {
    group_members (group_id, user_id) {
        group_id -> Text,
        user_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    audit_checkpoints (seq) {
        seq -> BigInt,
        hash -> Text,
        pruned -> BigInt,
        created_at -> BigInt,
    }
}

diesel::joinable!(user_recovery_codes -> users (user_id));
diesel::joinable!(user_roles -> users (user_id));
diesel::joinable!(user_roles -> roles (role_id));
diesel::joinable!(client_secrets -> clients (client_id));
diesel::joinable!(client_registrations -> clients (client_id));
diesel::joinable!(login_sessions -> users (user_id));
diesel::joinable!(consents -> users (user_id));
diesel::joinable!(consents -> clients (client_id));
diesel::joinable!(grants -> clients (client_id));
diesel::joinable!(authorization_codes -> grants (grant_id));
diesel::joinable!(refresh_tokens -> grants (grant_id));
diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(group_roles -> groups (group_id));
diesel::joinable!(group_roles -> roles (role_id));
diesel::joinable!(group_members -> groups (group_id));
diesel::joinable!(group_members -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    user_recovery_codes,
    roles,
    user_roles,
    clients,
    client_secrets,
    client_registrations,
    login_sessions,
    consents,
    grants,
    authorization_codes,
    refresh_tokens,
    revoked_tokens,
    signing_keys,
    api_keys,
    audit_events,
    groups,
    group_roles,
    group_members,
    audit_checkpoints,
);

diesel::table! {
    client_generation (id) {
        id -> Integer,
        generation -> BigInt,
    }
}

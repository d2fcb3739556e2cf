package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// StoredRooms returns the rooms that have envelopes stored, in name order, at
// most limit of them. It seeks the room index once a room, so it costs
// the number of rooms, not of envelopes: a relay with millions of
// envelopes lists its rooms at start in milliseconds.
func (s *Store) StoredRooms(ctx context.Context, limit int) ([]string, error) {
	var out []string
	after := ""
	for len(out) < limit {
		var room string
		err := s.r.QueryRowContext(ctx, `SELECT room FROM envelopes WHERE room > ? ORDER BY room LIMIT 1`, after).Scan(&room)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("store: rooms: %w", err)
		}
		out = append(out, room)
		after = room
	}
	return out, nil
}

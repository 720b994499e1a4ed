package clip

import (
	"context"
	"errors"
)

// fetchFromHub downloads a hub model into the local cache.
func fetchFromHub(ctx context.Context, id string, opt Options) (string, error) {
	return "", errors.New("hub download is not available in this build")
}

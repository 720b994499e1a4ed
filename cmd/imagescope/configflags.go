package main

import (
	"flag"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
)

// configFlags are the configuration flags shared by the commands that run
// models: the config file, the CLIP model and threads, and --set overrides.
// Flags win over the environment and the file.
type configFlags struct {
	path    string
	clip    string
	threads int
	sets    config.Overrides
}

func addConfigFlags(fs *flag.FlagSet) *configFlags {
	c := &configFlags{}
	fs.StringVar(&c.path, "config", "", "configuration file (default $IMAGESCOPE_CONFIG)")
	fs.StringVar(&c.clip, "clip", "", "CLIP checkpoint directory or HuggingFace id (default: the config's clip.model, else "+clip.DefaultModel+")")
	fs.IntVar(&c.threads, "threads", 0, "CLIP threads (0: the config's clip.threads, else all cores)")
	fs.Var(&c.sets, "set", "override any key of the configuration file, given dotted, e.g. --set roles.verifier.max_in_flight=64 or --set queue.ack_wait=5m (repeatable; beats the environment and the file)")
	return c
}

// load reads the configuration and applies the flags on top of it.
func (c *configFlags) load(e *env) (*config.Config, error) {
	path := c.path
	if path == "" {
		path = e.getenv("IMAGESCOPE_CONFIG")
	}
	cfg, err := config.Load(path, e.getenv)
	if err != nil {
		return nil, err
	}
	if c.clip != "" {
		cfg.CLIP.Model = c.clip
	}
	if c.threads > 0 {
		cfg.CLIP.Threads = c.threads
	}
	if err := c.sets.Apply(cfg, e.getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}
